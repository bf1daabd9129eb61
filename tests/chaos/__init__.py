"""The chaos suite: real broker, real worker processes and the sandbox, under churn and faults.

`scenarios` says what each scenario does and how big it is per tier (``ci`` small, ``full``
large); `runner` drives one scenario with a `fleet` of worker processes, a paced `publisher` and
a `churn` schedule; `checker` is the one verdict every scenario must pass. ``pytest -m chaos
tests/chaos`` runs the ci tier; ``python -m tests.chaos --tier full`` prints the results table.
"""
