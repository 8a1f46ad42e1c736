"""The qat-service client: the Python API (:class:`Client`) and the ``qat`` client commands.

It installs on its own (``pip install 'qat-service'``: httpx, pydantic, rich and click)
and imports nothing of the server or the training stack, so a laptop or a training
environment can submit jobs and fetch INT8 models without pinning its torch or numpy.

    from service.client import Client

    with Client("http://127.0.0.1:8000", token) as qat:
        job = qat.submit("model.pt2", data="data.npz", spec={"epochs": 1})
        job = qat.wait(job.id, on_progress=lambda j: print(j.phase, j.progress))
        paths = qat.download(job.id, "out/")
"""

from service.client.api import ApiError, ChecksumMismatch, Client, ClientError, JobId, ServerUnreachable, WaitTimeout
from service.contract import Artifact, Dataset, Failure, Job, JobState, Progress

__all__ = [
    "ApiError",
    "Artifact",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Dataset",
    "Failure",
    "Job",
    "JobId",
    "JobState",
    "Progress",
    "ServerUnreachable",
    "WaitTimeout",
]
