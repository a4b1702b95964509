"""Which status a failure gets: an allocation failure of any library is `oom` (the micro-batch search steps down),
anything unexplained is `error` (the search abandons the method)."""

from __future__ import annotations

import pytest
import torch

from pretrain_bench.bench import launch
from pretrain_bench.train import loop, worker

# torchrun's failure summary for a rank that SIGKILL ended (the shape _dead_rank parses).
KILLED = """[0]:
  time      : 2026-11-29_10:00:00
  host      : node
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 1234)
  error_file: <N/A>
"""


@pytest.mark.parametrize("message", [
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "NCCL error in: ProcessGroupNCCL.cpp:3000, unhandled cuda error; last error: Failed to CUDA calloc async 2432 "
    "bytes",
    "NCCL WARN Failed to CUDA host alloc 4194304 bytes",
])
def test_library_allocation_failures_are_oom(message):
    assert worker.classify(RuntimeError(message)) == "oom"


def test_an_allocation_failure_beneath_a_backend_error_is_oom():
    try:
        try:
            raise RuntimeError("CUBLAS_STATUS_ALLOC_FAILED")
        except RuntimeError as inner:
            raise torch.distributed.DistBackendError("NCCL communicator was aborted") from inner
    except RuntimeError as outer:
        assert worker.classify(outer) == "oom"


def test_other_failures_keep_their_status():
    assert worker.classify(torch.OutOfMemoryError("x")) == "oom"
    assert worker.classify(loop.Diverged(3, float("nan"))) == "diverged"
    assert worker.classify(RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")) == "error"


def test_a_rank_the_oom_killer_ended_is_oom(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(KILLED)
    ranks = [{"rank": 0, "status": "error", "error": "rank 0: connection reset by peer"}]
    outcome = launch._outcome(ranks, 2, 1, log, killed_for_memory=True)
    assert outcome.status == "oom" and "OOM killer" in outcome.error and "rank 1 died (SIGKILL)" in outcome.error
    assert launch._outcome(ranks, 2, 1, log, killed_for_memory=False).status == "error"  # killed by someone else


def test_the_oom_kill_counter_is_read_from_this_process_cgroup():
    count = launch.oom_kill_count()
    assert count is None or count >= 0
