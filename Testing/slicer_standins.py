"""Minimal stand-ins for the Qt side of 3D Slicer, so that Slicer's own Python layers run headless.

Slicer's ``parameterNodeWrapper``, ``ScriptedLoadableModule``, ``slicer.util`` and the module
itself import ``qt``, ``ctk`` and a few Qt widget classes from ``slicer``. Without Slicer's
application these do not exist; here they are small Python classes with just the members
those layers and the module use: properties, signals, children, dynamic properties. A
``QUiLoader`` builds a widget tree from a ``.ui`` file (classes, object names, properties,
signal/slot connections), and ``Application`` stands in for ``slicer.app``: testing mode, a
module manager, settings, and ``processEvents`` firing due ``QTimer``s.

Nothing here implements Slicer's behaviour: MRML is slicer-core's real scene, and the
parameter node, its serializers and GUI connectors, ``slicer.util`` and the module's code
are the real ones. An unknown widget class in a ``.ui`` file is an error, not a silent
stand-in, so what runs is always what was declared.
"""
from __future__ import annotations

import inspect
import time
import types
import xml.etree.ElementTree as ET
from typing import Any, Callable, Optional


# ----------------------------------------------------------------------------- signals
def _positionalCapacity(slot: Callable) -> Optional[int]:
    """How many positional arguments ``slot`` takes (None: any number)."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


class Signal:
    """A connectable signal; ``emit`` calls the slots in connection order. As PythonQt does, a
    slot that takes fewer arguments than the signal carries gets the leading ones."""

    def __init__(self) -> None:
        self._slots: list[Callable] = []

    def connect(self, slot: Callable) -> None:
        self._slots.append(slot)

    def disconnect(self, slot: Callable) -> None:
        self._slots.remove(slot)

    def emit(self, *args: Any) -> None:
        for slot in list(self._slots):
            capacity = _positionalCapacity(slot)
            slot(*(args if capacity is None else args[:capacity]))


class signal:
    """Class attribute declaring a signal; each instance gets its own :class:`Signal`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        return obj.__dict__.setdefault(f"_signal_{self.name}", Signal())


def notifying(name: str, signalName: str, convert: Callable = lambda v: v, emitted: Callable = None):
    """A property whose assignment emits ``signalName`` when the value changes."""

    def getter(self):
        return self.__dict__.get(f"_{name}")

    def setter(self, value):
        value = convert(self, value)
        if self.__dict__.get(f"_{name}") != value:
            self.__dict__[f"_{name}"] = value
            getattr(self, signalName).emit(*((emitted(self, value),) if emitted else (value,)))
    return property(getter, setter)


# ----------------------------------------------------------------------------- objects and widgets
class QObject:
    def __init__(self, parent: Optional["QObject"] = None) -> None:
        self._children: list[QObject] = []
        self._parent: Optional[QObject] = None
        self._properties: dict[str, Any] = {}
        self.objectName = ""
        if parent is not None:
            parent._adopt(self)

    def _adopt(self, child: "QObject") -> None:
        if child._parent is not None:
            child._parent._children.remove(child)
        child._parent = self
        self._children.append(child)

    @property
    def name(self) -> str:   # PythonQt exposes objectName as ``name`` too
        return self.objectName

    def parent(self) -> Optional["QObject"]:
        return self._parent

    def children(self) -> list["QObject"]:
        return list(self._children)

    def findChildren(self, cls: type = None) -> list["QObject"]:
        found = []
        for child in self._children:
            if cls is None or isinstance(child, cls):
                found.append(child)
            found.extend(child.findChildren(cls))
        return found

    def property(self, name: str) -> Any:
        return self._properties.get(name)

    def setProperty(self, name: str, value: Any) -> None:
        self._properties[name] = value

    def isWidgetType(self) -> bool:
        return False

    def className(self) -> str:
        return type(self).__name__

    def deleteLater(self) -> None:
        """Qt deletes the object when control returns to the event loop; here it leaves its
        parent at once, so ``findChildren`` no longer lists it."""
        if self._parent is not None:
            self._parent._children.remove(self)
            self._parent = None
        self.__dict__["_deleted"] = True


class QLayout(QObject):
    """A layout: the widgets added to it become children of the widget it manages, as in Qt;
    ``count()`` is the number of its items."""

    def __init__(self, parent: Optional["QWidget"] = None) -> None:
        super().__init__()
        self._owner: Optional[QWidget] = None
        self._items: list[Any] = []
        if parent is not None:
            parent.setLayout(self)

    def addWidget(self, widget: "QWidget", *args: Any) -> None:
        if self._owner is not None:
            self._owner._adopt(widget)
        self._items.append(widget)

    def removeWidget(self, widget: "QWidget") -> None:
        """As in Qt: the widget leaves the layout, not its parent."""
        if widget in self._items:
            self._items.remove(widget)

    def addLayout(self, layout: "QLayout", *args: Any) -> None:
        layout._owner = self._owner
        self._items.append(layout)

    def count(self) -> int:
        return len(self._items)


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    """Rows of (label, field); ``addRow(label, field)`` with widgets or ``addRow(field)``."""

    def __init__(self, parent: Optional["QWidget"] = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[Any, Any]] = []

    def addRow(self, *items: Any) -> None:
        if len(items) == 1:
            label, field = None, items[0]
        else:
            label, field = items[0], items[1]
            if isinstance(label, str):          # Qt makes a QLabel of a text label
                label = QLabel(label)
        for item in (label, field):
            if isinstance(item, QWidget):
                self.addWidget(item)
            elif isinstance(item, QLayout):
                self.addLayout(item)
        self._rows.append((label, field))

    def rowCount(self) -> int:
        return len(self._rows)


class QGridLayout(QLayout):
    pass


class QWidget(QObject):
    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self._layout: Optional[QLayout] = None

    def isWidgetType(self) -> bool:
        return True

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def isVisible(self) -> bool:
        return self.visible

    def setLayout(self, layout: QLayout) -> None:
        layout._owner = self
        self._layout = layout

    def layout(self) -> Optional[QLayout]:
        return self._layout


class QFrame(QWidget):
    pass


class QLabel(QWidget):
    def __init__(self, text: str = "", parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.text = text
        self.wordWrap = False


class QAbstractButton(QWidget):
    clicked = signal()
    toggled = signal()
    checked = notifying("checked", "toggled", convert=lambda self, v: bool(v))

    def __init__(self, text: str = "", parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self._checked = False

    def click(self) -> None:
        if self.enabled:
            if self.checkable:
                self.checked = not self.checked
            self.clicked.emit()


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    stateChanged = signal()

    def __init__(self, text: str = "", parent: Optional[QObject] = None) -> None:
        super().__init__(text, parent)
        self.checkable = True
        self.toggled.connect(lambda checked: self.stateChanged.emit(2 if checked else 0))


class QSpinBox(QWidget):
    """Integer spin box: the value is clamped to the range, as Qt does."""
    valueChanged = signal()
    value = notifying("value", "valueChanged",
                      convert=lambda self, v: int(min(max(int(v), self.minimum), self.maximum)))

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.minimum, self.maximum, self.singleStep = 0, 99, 1
        self._value = 0

    def setRange(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.value = self._value

    def setMinimum(self, minimum: float) -> None:
        self.setRange(minimum, max(self.maximum, minimum))

    def setMaximum(self, maximum: float) -> None:
        self.setRange(min(self.minimum, maximum), maximum)


class QDoubleSpinBox(QSpinBox):
    """Floating-point spin box: clamped and rounded to ``decimals``, as Qt does."""
    value = notifying("value", "valueChanged",
                      convert=lambda self, v: round(float(min(max(float(v), self.minimum), self.maximum)),
                                                    self.decimals))

    def __init__(self, parent: Optional[QObject] = None) -> None:
        self.decimals = 2
        super().__init__(parent)
        self._value = 0.0


class QSlider(QSpinBox):
    pass


class QComboBox(QWidget):
    currentIndexChanged = signal()
    currentTextChanged = signal()

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._items: list[str] = []
        self._currentIndex = -1

    @property
    def count(self) -> int:
        return len(self._items)

    @property
    def currentIndex(self) -> int:
        return self._currentIndex

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        index = index if 0 <= index < len(self._items) else -1
        if index != self._currentIndex:
            self._currentIndex = index
            self.currentIndexChanged.emit(index)
            self.currentTextChanged.emit(self.currentText)

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    @property
    def currentText(self) -> str:
        return self._items[self._currentIndex] if self._currentIndex >= 0 else ""

    def addItem(self, text: str, *args: Any) -> None:
        self._items.append(str(text))
        if self._currentIndex < 0:
            self.currentIndex = 0

    def clear(self) -> None:
        self._items = []
        self.currentIndex = -1

    def findText(self, text: str) -> int:
        return self._items.index(text) if text in self._items else -1

    def itemText(self, index: int) -> str:
        return self._items[index]


class QLineEdit(QWidget):
    """``text`` assignments emit ``textChanged``; ``editingFinished`` is what Qt emits on Return
    or when the field loses focus (a test emits it after typing)."""
    textChanged = signal()
    editingFinished = signal()
    text = notifying("text", "textChanged", convert=lambda self, v: str(v))

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._text = ""
        self.placeholderText = ""


class QTextEdit(QWidget):
    textChanged = signal()

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._text = ""

    def toPlainText(self) -> str:
        return self._text

    def setPlainText(self, text: str) -> None:
        self._text = str(text)
        self.textChanged.emit()


class QPlainTextEdit(QTextEdit):
    def appendPlainText(self, text: str) -> None:
        self.setPlainText(self._text + ("\n" if self._text else "") + str(text))

    def clear(self) -> None:
        self.setPlainText("")


class QProgressBar(QWidget):
    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.minimum, self.maximum, self.value, self.format = 0, 100, 0, "%p%"


class QColor:
    def __init__(self, *args: Any) -> None:
        self.args = args


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = path


class QSettings:
    """Application settings, kept in memory and shared by every instance."""
    _values: dict[str, Any] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        self._values[key] = value

    def contains(self, key: str) -> bool:
        return key in self._values


class QTimer(QObject):
    """A timer fired by :meth:`Application.processEvents` once its interval has passed."""
    timeout = signal()

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.interval, self.singleShotMode, self._due = 0, False, None

    def setInterval(self, msec: int) -> None:
        self.interval = int(msec)

    def setSingleShot(self, value: bool) -> None:
        self.singleShotMode = bool(value)

    def start(self, msec: Optional[int] = None) -> None:
        if msec is not None:
            self.interval = int(msec)
        self._due = time.monotonic() + self.interval / 1000.0
        Application.timers.add(self)

    def stop(self) -> None:
        self._due = None
        Application.timers.discard(self)

    def isActive(self) -> bool:
        return self._due is not None

    def _fireIfDue(self, now: float) -> None:
        if self._due is not None and now >= self._due:
            if self.singleShotMode:
                self.stop()
            else:
                self._due = now + self.interval / 1000.0
            self.timeout.emit()

    @staticmethod
    def singleShot(msec: int, slot: Callable) -> None:
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(slot)
        timer.start(msec)


class QFile:
    ReadOnly = 1

    def __init__(self, path: str) -> None:
        self.path = str(path)

    def exists(self) -> bool:
        import os
        return os.path.isfile(self.path)

    def open(self, mode: int) -> bool:
        return self.exists()


class QMessageBox:
    Ok, Cancel, Yes, No = 0x400, 0x400000, 0x4000, 0x10000
    NoIcon, Information, Warning, Critical, Question = 0, 1, 2, 3, 4


Qt = types.SimpleNamespace(WaitCursor=3, ArrowCursor=0, ShiftModifier=0x02000000, NoModifier=0)


# ----------------------------------------------------------------------------- CTK and Slicer widgets
class ctkCollapsibleButton(QAbstractButton):
    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__("", parent)
        self.collapsed = False


class ctkPathLineEdit(QWidget):
    currentPathChanged = signal()
    currentPath = notifying("currentPath", "currentPathChanged", convert=lambda self, v: str(v))

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._currentPath = ""
        self.filters = 0
        self.nameFilters: list[str] = []


def _ctkClass(name: str, base: type) -> type:
    """A CTK widget the GUI connectors name in their type checks but this module never shows."""
    return type(name, (base,), {})


class qMRMLWidget(QWidget):
    mrmlSceneChanged = signal()

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene: Any) -> None:
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self) -> Any:
        return self._scene


class qMRMLNodeComboBox(qMRMLWidget):
    """Node selector: only nodes of the scene whose class is one of ``nodeTypes`` are accepted,
    as in Slicer (others leave the selection unchanged)."""
    currentNodeChanged = signal()
    currentNodeIDChanged = signal()

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.nodeTypes: list[str] = []
        self.noneEnabled = False
        self.addEnabled = self.removeEnabled = self.renameEnabled = False
        self._node = None

    def currentNode(self) -> Any:
        return self._node

    def currentNodeID(self) -> str:
        return self._node.GetID() if self._node is not None else ""

    def _accepts(self, node: Any) -> bool:
        if node is None:
            return True
        return (self._scene is not None and node.GetScene() is self._scene
                and any(node.IsA(nodeType) for nodeType in self.nodeTypes))

    def setCurrentNode(self, node: Any) -> None:
        if self._accepts(node) and node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(self.currentNodeID())


class qSlicerMarkupsPlaceWidget(qMRMLWidget):
    ForcePlaceSingleMarkup, ForcePlaceMultipleMarkups = 1, 2

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.buttonsVisible = True
        self.placeMultipleMarkups = 0
        self._node = None
        self._placeButton = QToolButton("", self)

    def placeButton(self) -> QToolButton:
        return self._placeButton

    def setCurrentNode(self, node: Any) -> None:
        self._node = node

    def currentNode(self) -> Any:
        return self._node


class qSlicerWidget(qMRMLWidget):
    pass


class qSlicerScriptedLoadableModuleWidget(qSlicerWidget):
    """The C++ host of a scripted module's panel: it builds the Python widget class of the
    module on that panel and calls ``setup()``, as Slicer does on first display."""

    def __init__(self, widgetClass: type) -> None:
        super().__init__()
        self.isEntered = False
        self.setLayout(QVBoxLayout())
        self._python = widgetClass(self)
        self._python.setup()

    def self(self) -> Any:
        return self._python

    def enter(self) -> None:
        """The module is selected: Slicer marks the panel entered, then calls ``enter()``."""
        self.isEntered = True
        self._python.enter()

    def exit(self) -> None:
        self._python.exit()
        self.isEntered = False


class qSlicerScriptedLoadableModule(QObject):
    """A loaded scripted module: its properties (title, categories, ...) are set by the Python
    module class; ``widgetRepresentation()`` creates the panel on first use."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__()
        self.objectName = name
        self.path = path
        self.widgetClass: Optional[type] = None
        self._widget: Optional[qSlicerScriptedLoadableModuleWidget] = None

    def widgetRepresentation(self) -> qSlicerScriptedLoadableModuleWidget:
        if self._widget is None:
            self._widget = qSlicerScriptedLoadableModuleWidget(self.widgetClass)
        return self._widget

    def isWidgetRepresentationCreated(self) -> bool:
        return self._widget is not None


# ----------------------------------------------------------------------------- the application
class ModuleManager(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.modules: dict[str, qSlicerScriptedLoadableModule] = {}
        self.connections: list[tuple[str, Callable]] = []

    def module(self, name: str) -> Optional[qSlicerScriptedLoadableModule]:
        return self.modules.get(name)

    def connect(self, signalSignature: str, slot: Callable) -> None:
        self.connections.append((signalSignature, slot))

    def disconnect(self, signalSignature: str, slot: Callable) -> None:
        self.connections.remove((signalSignature, slot))

    def emit(self, signalSignature: str, *args: Any) -> None:
        for name, slot in list(self.connections):
            if name == signalSignature:
                slot(*args)


class ProcessEnvironment:
    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def keys(self) -> list[str]:
        return list(self._values)

    def value(self, key: str) -> str:
        return self._values.get(key, "")


class Application(QObject):
    """``slicer.app`` in testing mode: dialogs are logged, not shown (slicer.util's own rule)."""
    timers: set[QTimer] = set()
    applicationName = "3D Slicer"
    documentationBaseUrl = "https://slicer.readthedocs.io/en/latest/"

    def __init__(self, majorVersion: int = 5, minorVersion: int = 12) -> None:
        super().__init__()
        self.majorVersion, self.minorVersion = majorVersion, minorVersion
        self._moduleManager = ModuleManager()
        self._settings = QSettings()

    def testingEnabled(self) -> bool:
        return True

    def translate(self, context: str, text: str) -> str:
        return text

    def processEvents(self) -> None:
        now = time.monotonic()
        for timer in list(Application.timers):
            timer._fireIfDue(now)

    def moduleManager(self) -> ModuleManager:
        return self._moduleManager

    def settings(self) -> QSettings:
        return self._settings

    def userSettings(self) -> QSettings:
        return self._settings

    def startupEnvironment(self) -> ProcessEnvironment:
        import os
        return ProcessEnvironment(os.environ)

    def setOverrideCursor(self, cursor: Any) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def moduleDocumentationUrl(self, name: str) -> str:
        return self.documentationBaseUrl + name

    def mainWindow(self) -> None:
        return None


# ----------------------------------------------------------------------------- .ui files
def _propertyValue(element: ET.Element) -> Any:
    value = element[0]
    if value.tag == "string":
        return value.text or ""
    if value.tag == "bool":
        return value.text == "true"
    if value.tag == "number":
        return int(value.text)
    if value.tag == "double":
        return float(value.text)
    if value.tag == "stringlist":
        return [s.text or "" for s in value.iter("string")]
    if value.tag in ("enum", "set"):
        return value.text
    return None   # geometry, size policies, fonts: nothing the tests read


class QUiLoader:
    """Builds widgets from a Qt Designer ``.ui`` file: classes (each must be known here),
    object names, properties (dynamic ones such as ``SlicerParameterName`` included) and the
    file's signal/slot connections."""

    def __init__(self, classes: dict[str, type]) -> None:
        self.classes = classes

    def load(self, qfile: QFile) -> QWidget:
        root = ET.parse(qfile.path).getroot()
        top = self._widget(root.find("widget"), None)
        named = {w.objectName: w for w in [top] + top.findChildren()}
        for connection in root.iter("connection"):
            sender, receiver = named[connection.findtext("sender")], named[connection.findtext("receiver")]
            signalName = connection.findtext("signal").split("(")[0]
            slotName = connection.findtext("slot").split("(")[0]
            getattr(sender, signalName).connect(getattr(receiver, slotName))
        return top

    def _widget(self, element: ET.Element, parent: Optional[QWidget]) -> QWidget:
        className = element.get("class")
        if className not in self.classes:
            raise TypeError(f"the .ui file uses {className}, which has no stand-in")
        widget = self.classes[className]()
        if parent is not None:
            parent._adopt(widget)
        widget.objectName = element.get("name", "")
        for prop in element.findall("property"):
            name, value = prop.get("name"), _propertyValue(prop)
            if prop.get("stdset") == "0" or not hasattr(widget, name):
                widget.setProperty(name, value)
            elif value is not None and not callable(getattr(widget, name)):
                setattr(widget, name, value)
        self._children(element, widget)
        return widget

    def _children(self, element: ET.Element, widget: QWidget, layout: Optional[QLayout] = None) -> None:
        """Child widgets, and layouts (set on their widget, holding their items) as Qt builds them."""
        for child in element:
            if child.tag == "widget":
                childWidget = self._widget(child, widget)
                if layout is not None:
                    layout._items.append(childWidget)
            elif child.tag == "layout":
                className = child.get("class")
                if className not in LAYOUT_CLASSES:
                    raise TypeError(f"the .ui file uses {className}, which has no stand-in")
                childLayout = LAYOUT_CLASSES[className]()
                childLayout.objectName = child.get("name", "")
                if layout is None:
                    widget.setLayout(childLayout)
                else:
                    layout.addLayout(childLayout)
                self._children(child, widget, childLayout)
            elif child.tag == "item":
                self._children(child, widget, layout)


# ----------------------------------------------------------------------------- the modules
LAYOUT_CLASSES = {cls.__name__: cls for cls in (QVBoxLayout, QHBoxLayout, QFormLayout, QGridLayout)}
QT_CLASSES = (QObject, QWidget, QFrame, QLabel, QAbstractButton, QPushButton, QToolButton, QCheckBox,
              QSpinBox, QDoubleSpinBox, QSlider, QComboBox, QLineEdit, QTextEdit, QPlainTextEdit,
              QProgressBar, QColor, QIcon, QSettings, QTimer, QFile, QMessageBox, QLayout, QVBoxLayout,
              QHBoxLayout, QFormLayout, QGridLayout)
SLICER_QT_CLASSES = (qMRMLWidget, qMRMLNodeComboBox, qSlicerMarkupsPlaceWidget, qSlicerWidget,
                     qSlicerScriptedLoadableModuleWidget, qSlicerScriptedLoadableModule)


def makeModules() -> tuple[types.ModuleType, types.ModuleType, dict[str, type]]:
    """The ``qt`` and ``ctk`` stand-in modules and the Slicer Qt classes to set on ``slicer``."""
    qt = types.ModuleType("qt", "Stand-in for PythonQt's qt module (tests only)")
    for cls in QT_CLASSES:
        setattr(qt, cls.__name__, cls)
    qt.Qt = Qt
    qt.QUiLoader = lambda: QUiLoader(uiClasses)

    ctk = types.ModuleType("ctk", "Stand-in for CTK's Python module (tests only)")
    ctk.ctkCollapsibleButton = ctkCollapsibleButton
    ctk.ctkPathLineEdit = ctkPathLineEdit
    for name, base in (("ctkCheckBox", QCheckBox), ("ctkComboBox", QComboBox), ("ctkSliderWidget", QDoubleSpinBox),
                       ("ctkDoubleSpinBox", QDoubleSpinBox), ("ctkDoubleSlider", QDoubleSpinBox),
                       ("ctkRangeWidget", QWidget), ("ctkDoubleRangeSlider", QWidget),
                       ("ctkColorPickerButton", QPushButton), ("ctkDirectoryButton", QPushButton),
                       ("ctkCheckablePushButton", QPushButton)):
        setattr(ctk, name, _ctkClass(name, base))

    slicerClasses = {cls.__name__: cls for cls in SLICER_QT_CLASSES}
    for name, base in (("qMRMLSpinBox", QDoubleSpinBox), ("qMRMLSliderWidget", QDoubleSpinBox),
                       ("qMRMLRangeWidget", QWidget)):
        slicerClasses[name] = _ctkClass(name, base)

    uiClasses = {cls.__name__: cls for cls in QT_CLASSES if isinstance(cls, type) and issubclass(cls, QWidget)}
    uiClasses.update({name: getattr(ctk, name) for name in dir(ctk) if name.startswith("ctk")})
    uiClasses.update(slicerClasses)
    return qt, ctk, slicerClasses
