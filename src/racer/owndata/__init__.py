"""The own-data loop: calibration data from your own models and traffic.

- :mod:`racer.owndata.collect`: every model's response to every query, resumably, through
  the gateway's backends (``racer collect``);
- :mod:`racer.owndata.grade`: 0/1 labels by exact rules or an LLM judge (``racer grade``);
- :mod:`racer.owndata.dataset_export`: the audited sample of a gateway's decision log as a
  routing dataset (``racer dataset --from-log``).

Their output loads with :func:`racer.load_dataset`, for ``racer calibrate``.
"""
