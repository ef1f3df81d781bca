"""The benchmark harness of dsr (``make bench``): speed as ratios against PostgreSQL's own COPY.

See ``bench/README.md``. Nothing here runs in ``make test``: timings are figures to record and
compare, never assertions.
"""
