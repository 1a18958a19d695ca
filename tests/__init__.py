"""The test suite, a package: ``tests.helpers`` holds what the test modules share.

Layout mirrors what is tested: ``unit`` (pure logic and single stages, no database), ``db``
(the inventory on a real PostGIS), ``faults`` (kill -9, concurrency), ``flows`` (Prefect flows
and the CLI end to end). Fixtures live in ``conftest.py`` files; real sample data comes only
through the ``realdata`` fixture.
"""
