"""Batch scoring of tables on Dask: the stream's checks and model, partition by partition.

* :mod:`streams.batch.partition` — the pure part: one partition (a pandas frame of
  events) in, the prediction rows and the rejected rows out, as the stream would
  have produced them for the same events;
* :mod:`streams.batch.payload` — the champion as bytes, rebuilt once per Dask worker;
* :mod:`streams.batch.output` — where and how a partition's results are written;
* :mod:`streams.batch.driver` — reads Parquet or CSV through Dask, runs one task per
  partition on a ``LocalCluster`` or an existing scheduler, and shows the progress.
"""
