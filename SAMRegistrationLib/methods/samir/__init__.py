"""Method ``samir`` (in progress, issue 17): SAMIR (He, Liu et al., seed 001), a network on frozen
foundation features. The network (:mod:`.network`), its losses (:mod:`.losses`) and the frozen
features (:mod:`.frozen`) are here; the plug-in is declared once a trained model ships with the
package, so that no listed method needs weights it cannot find."""
