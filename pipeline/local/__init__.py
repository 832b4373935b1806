"""The pipeline on one machine, against moto instead of AWS: `image-pipeline local` (the local
stack, topology.py) and what makes moto behave like AWS where the pipeline relies on it."""

# The function runner's defaults (runner.py), here so that the command line can show them without
# importing the servers.
DEFAULT_CONCURRENCY = 4
DEFAULT_RETRY_DELAYS = (1.0, 2.0)
LAMBDA_RETRY_DELAYS = (60.0, 120.0)  # what Lambda waits, roughly, before its two retries
