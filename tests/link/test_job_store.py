"""The job store: idempotent submission, the queue in arrival order, and each job's progress
(tokens and RNG state for exact resume) committed and read back across a reopen."""
import pytest

from flight.store.job_store import Progress, DuplicateJobError, Job, JobStore
from flight.store.onboard_db import OnboardDb


def test_jobs_queue_in_arrival_order_and_resubmission_is_idempotent(tmp_path):
    jobs = JobStore(OnboardDb(tmp_path / "onboard.sqlite"))
    assert jobs.add_job(Job(2, "b", 8, 1)) and jobs.add_job(Job(1, "a", 8, 1))
    assert not jobs.add_job(Job(2, "b", 8, 1))
    with pytest.raises(DuplicateJobError):
        jobs.add_job(Job(2, "other", 8, 1))
    assert [j.job_id for j in jobs.queued_jobs()] == [2, 1] and jobs.queue_depth() == 2
    jobs.fail_job(2)
    assert [j.job_id for j in jobs.queued_jobs()] == [1]


@pytest.mark.parametrize("tokens, state", [([], 1), ([0, 1, 2**32 - 1], 2**64 - 1), (list(range(4096)), 12345)])
def test_progress_round_trips_and_survives_a_reopen(tmp_path, tokens, state):
    path = tmp_path / "onboard.sqlite"
    db = OnboardDb(path)
    jobs = JobStore(db)
    jobs.add_job(Job(7, "p", 4096, 1))
    assert jobs.progress(7) is None
    jobs.save_progress(7, [5], 99)
    jobs.save_progress(7, tokens, state)  # the latest save wins
    db.close()
    assert JobStore(OnboardDb(path)).progress(7) == Progress(tokens, state)


@pytest.mark.parametrize("state", [-1, 2**64])
def test_bad_rng_state_is_refused_before_anything_is_written(tmp_path, state):
    jobs = JobStore(OnboardDb(tmp_path / "onboard.sqlite"))
    with pytest.raises(ValueError):
        jobs.save_progress(7, [1], state)
    assert jobs.progress(7) is None


def test_a_stored_result_supersedes_the_jobs_progress(tmp_path):
    from flight.store.result_store import ResultStore

    db = OnboardDb(tmp_path / "onboard.sqlite")
    jobs, results = JobStore(db), ResultStore(db, 1024)
    jobs.add_job(Job(7, "p", 8, 1))
    jobs.save_progress(7, [1, 2, 3], 42)
    assert results.store_result(7, b"done", 1, bytes(16))
    assert jobs.progress(7) is None and jobs.queued_jobs() == []
