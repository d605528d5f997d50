"""``samreg batch``: many registrations on Dask distributed, resumable, with a summary table.

* :mod:`.table`   - the pairs table (CSV): one ``samreg register`` command per row.
* :mod:`.cluster` - a LocalCluster, an existing scheduler, or an HPC queue via dask-jobqueue.
* :mod:`.task`    - what a Dask worker runs for one pair, and the record it leaves.
* :mod:`.summary` - ``summary.csv``, ``summary.png`` and ``batch.json``.
* :mod:`.runner`  - submits the pairs, follows them with a progress bar, resumes.
"""
