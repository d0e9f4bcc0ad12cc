"""The rules that keep a cluster sweep from mixing, losing or repeating results (issue 23), tested directly:
fenced GAN leases (fake monotonic clock), the GAN cache's attempts, the driver's claim on its store (local flock,
S3 conditional writes), results written per trial end and surviving store errors, resume merging, hostile
run folders, cluster.yaml's placeholders and credentials. No Ray here; tests/test_cluster_faults.py runs the
same rules under Tune."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from s3_server import s3_server

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    from sweeps import leases

    c = Clock()
    monkeypatch.setattr(leases.time, "monotonic", c)
    return c


# ---------------------------------------------------------------- fenced GAN leases

def test_a_restarted_lease_service_grants_nothing_for_a_ttl_and_adopts_live_holders(clock):
    from sweeps.leases import _Leases

    fresh = _Leases(ttl_s=30, restarted=False)
    grant = fresh.acquire("k", "trial-a")
    assert grant is not None  # a new service (a new sweep) grants at once
    after = _Leases(ttl_s=30, restarted=True)  # max_restarts: the same actor, its memory empty
    assert after.acquire("k", "trial-b") is None  # trial-a may still be training
    assert after.acquire("other", "trial-c") is None  # nothing at all for one TTL
    for _ in range(2):
        clock.t += 10
        assert after.renew("k", "trial-a", grant["attempt"])  # trial-a's heartbeat: adopted, same attempt
    clock.t += 11  # the quiet TTL is over
    assert after.acquire("k", "trial-b") is None  # trial-a renewed 11 s ago: still its lease
    assert after.acquire("other", "trial-c") is not None  # keys nobody holds are granted again
    clock.t += 31  # trial-a went silent for a TTL
    assert after.acquire("k", "trial-b") is not None and not after.renew("k", "trial-a", grant["attempt"])


def test_a_holder_whose_renewal_is_refused_stops_before_publishing(clock, tmp_path):
    from sweeps.artifacts import CheckpointSync
    from sweeps.leases import Holding, LeaseLost

    answers = iter([True, False])
    h = Holding("k", "trial-a", "att1", ttl_s=30, heartbeat_s=5, renew=lambda: next(answers), sent_at=clock.t)
    assert h.valid()
    clock.t += 5
    h.beat()  # renewed: valid until 5 + 30 - 5 s from the start
    clock.t += 20
    assert h.valid()
    h.beat()  # the service gave the key to another attempt
    assert not h.valid()
    published = []
    store = SimpleNamespace(remote=True, local=lambda key="": tmp_path / key, uri=lambda key="": f"s3://b/{key}",
                            publish=published.append, delete=published.append)
    (tmp_path / "gans/k/a-att1/checkpoints").mkdir(parents=True)
    (tmp_path / "gans/k/a-att1/checkpoints/checkpoint_000002.pt").write_bytes(b"x")
    with pytest.raises(LeaseLost, match="attempt att1 is lost .*another attempt"):
        CheckpointSync(store, "gans/k/a-att1", fence=h)()
    assert published == []


def test_a_holder_that_cannot_renew_stops_before_its_lease_could_be_granted_again(clock):
    from sweeps.leases import Holding, LeaseLost

    def unreachable():
        raise TimeoutError("lease service restarting")

    h = Holding("k", "trial-a", "att1", ttl_s=30, heartbeat_s=5, renew=unreachable, sent_at=clock.t)
    for _ in range(4):  # 20 s of failed renewals
        clock.t += 5
        h.beat()
    assert h.valid()  # 20 s < 30 - 5
    clock.t += 5.5
    h.beat()
    with pytest.raises(LeaseLost, match="renewal failed"):
        h.check("publishing")  # 25.5 s since the last renewal was sent: the service may grant at 30


# ---------------------------------------------------------------- the GAN cache's attempts

@pytest.fixture
def s3_store(tmp_path):
    """scratch name -> a Store of one sweep seen from that scratch (moto's buckets outlive a server: a fresh prefix)."""
    import uuid

    from sweeps.storage import Store

    root = f"s3://sweeps/{uuid.uuid4().hex[:8]}/run"
    with s3_server() as endpoint:
        yield lambda scratch, run_id="": Store(root, endpoint, scratch=str(tmp_path / scratch), run_id=run_id)


def _fake_leases(monkeypatch, attempts):
    """gan_runs.gan_lease granting the given attempts in turn (the Ray actor's part, tested above)."""
    import contextlib

    from sweeps import gan_runs
    from sweeps.leases import Holding

    it = iter(attempts)

    @contextlib.contextmanager
    def fake(store, key, holder, lock_file, heartbeat_s):
        yield Holding(key, holder, next(it))

    monkeypatch.setattr(gan_runs, "gan_lease", fake)


def test_only_the_completing_attempts_files_count_and_one_set_of_checkpoints_is_left(s3_store, monkeypatch):
    from sweeps.gan_runs import complete, ensure_trained
    from sweeps.leases import Holding, LeaseLost

    store = s3_store("node")
    _fake_leases(monkeypatch, ["first", "second", "third"])
    calls = []

    def train(run_dir: Path, lease):
        calls.append((run_dir.name, sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))))
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for epoch in (1, 2) if lease.attempt == "first" else (3, 4):
            (run_dir / "checkpoints" / f"checkpoint_{epoch:06d}.pt").write_bytes(f"{lease.attempt}{epoch}".encode())
            store.publish(f"gans/k/a-{lease.attempt}/checkpoints/checkpoint_{epoch:06d}.pt")
        if lease.attempt == "first":
            raise LeaseLost("GAN k: the lease of attempt first is lost (test)")
        (run_dir / "synthetic").mkdir()
        (run_dir / "synthetic" / "s0.png").write_bytes(b"png")
        return {"status": "ok", "reason": "", "gan_key": "k"}

    record, run, trained = ensure_trained(store, "k", "trial-a", train)
    assert trained and run == "gans/k/a-second" and record["attempt"] == "second"
    assert calls == [("a-first", []), ("a-second", ["checkpoint_000002.pt"])]  # resumed from the newest checkpoint
    assert json.loads(store.read_text("gans/k/done.json"))["run"] == "gans/k/a-second"
    keys = sorted(o.key for o in store.list("gans/k"))
    assert [k for k in keys if k.endswith(".pt")] == [f"gans/k/a-second/checkpoints/checkpoint_{e:06d}.pt"
                                                      for e in (2, 3, 4)]
    # a fenced-off attempt that finishes late: writes no done.json of its own, reuses the winner's
    late, won = complete(store, "k", "gans/k/a-zombie", Holding("k", "trial-z", "zombie"), {"status": "ok"})
    assert not won and late["attempt"] == "second"
    # another node reuses it: the winner's run, without checkpoints
    info, run, trained = ensure_trained(s3_store("other_node"), "k", "trial-b", train)
    assert not trained and run == "gans/k/a-second" and len(calls) == 2
    assert (s3_store("other_node").local(run) / "synthetic" / "s0.png").read_bytes() == b"png"
    assert not list(s3_store("other_node").local(run).rglob("*.pt"))


# ---------------------------------------------------------------- one driver per sweep

def _cfg(**kw):
    from sweeps.config import SweepConfig

    return SweepConfig(**{"lease_ttl_s": 1.0, "lease_heartbeat_s": 0.2, **kw})


def test_a_second_driver_on_a_local_sweep_is_refused_while_the_first_lives(tmp_path):
    from data_prep.errors import ConfigError
    from sweeps.claim import claim_sweep
    from sweeps.storage import Store

    work = tmp_path / "sweep"
    first = claim_sweep(_cfg(), work, Store(str(work)))
    with pytest.raises(ConfigError, match=r"another driver is running the sweep in .* \(pid \d+"):
        claim_sweep(_cfg(resume=True), work, Store(str(work)))
    first.lease.release()
    claim_sweep(_cfg(resume=True), work, Store(str(work))).lease.release()


def test_a_second_driver_on_an_s3_sweep_waits_out_a_live_one_and_takes_over_a_dead_one(s3_store):
    from data_prep.errors import ConfigError
    from sweeps.claim import LEASE, claim_sweep
    from sweeps.storage import LOST_CLAIMS, ClaimLost

    first = claim_sweep(_cfg(), s3_store("a").local(), s3_store("a"), say=lambda *a, **k: None)
    try:
        t = time.monotonic()
        with pytest.raises(ConfigError, match="another driver is running this sweep: driver pid"):
            claim_sweep(_cfg(resume=True), s3_store("b").local(), s3_store("b"), say=lambda *a, **k: None)
        assert time.monotonic() - t < 3  # watched one TTL and a heartbeat, saw it renewed
        first.lease.stop.set()  # the first driver dies: its lease is no longer renewed
        first.lease.thread.join()
        second = claim_sweep(_cfg(resume=True), s3_store("b").local(), s3_store("b"), say=lambda *a, **k: None)
        assert second.run_id == first.run_id  # one sweep, one run id
        owner = json.loads(s3_store("b").read_text(LEASE))["owner"]
        assert owner == second.lease.owner
        assert not first.lease.renew_once()  # a driver that was only stalled wakes up: it finds the takeover ...
        with pytest.raises(ClaimLost):
            s3_store("a").publish("results.parquet")  # ... and writes nothing more to the store
        LOST_CLAIMS.clear()  # (one process plays both drivers here)
        second.lease.release()
        assert s3_store("b").read_text(LEASE) is None
    finally:
        LOST_CLAIMS.clear()


def test_the_same_sweep_twice_without_resume_is_refused_naming_the_stored_one(s3_store, tmp_path):
    from data_prep.errors import ConfigError
    from sweeps.claim import claim_sweep, save_state

    store = s3_store("head1")
    home = claim_sweep(_cfg(name="run"), store.local(), store)
    save_state(store, {"phase": "confirm"}, store.local("sweep_state.json"))
    home.lease.release()
    with pytest.raises(ConfigError, match=re.escape(store.uri()) + r" already holds a sweep named 'run' \(run "
                                          rf"{home.run_id} started .*phase confirm, no result rows\).*--resume"):
        claim_sweep(_cfg(name="run"), tmp_path / "head2", s3_store("head2"))
    assert not (tmp_path / "head2").exists()


def test_resume_never_replaces_newer_local_rows_with_older_stored_ones(s3_store):
    from analysis.load import read_table
    from sweeps.claim import claim_sweep
    from sweeps.results import ResultsTable

    store = s3_store("head")
    table = ResultsTable(store.local("results.parquet"), "s", store=store)
    table.add({"trial_id": "t1", "status": "ok", "val_f1": 0.1}, "classifier")
    table.add({"trial_id": "t2", "status": "ok", "val_f1": 0.2}, "classifier")
    table.write()  # the store: t1 (old), t2
    time.sleep(1.1)  # finished_at has a resolution of a second
    local = ResultsTable(store.local("results.parquet"), "s")  # the driver's disk only: the store never saw this
    local.add({"trial_id": "t1", "status": "ok", "val_f1": 0.9}, "classifier")
    local.add({"trial_id": "t3", "status": "ok", "val_f1": 0.3}, "classifier")
    local.write()
    claim_sweep(_cfg(resume=True), store.local(), store, say=lambda *a, **k: None).lease.release()
    df = read_table(store.local("results.parquet")).set_index("trial_id")
    assert sorted(df.index) == ["t1", "t2", "t3"] and df.loc["t1", "val_f1"] == 0.9


# ---------------------------------------------------------------- results: O(new rows), store errors survived

def test_a_trial_end_writes_a_part_not_the_whole_table(tmp_path, monkeypatch):
    from analysis.load import read_table
    from sweeps import results
    from sweeps.results import ResultsTable

    whole, parts = [], []
    write_atomic, write_part = results._write_atomic, results.write_part
    monkeypatch.setattr(results, "_write_atomic", lambda df, path: (whole.append(len(df)), write_atomic(df, path)))
    monkeypatch.setattr(results, "write_part", lambda rows, folder: (parts.append(len(rows)), write_part(rows, folder)))
    t = ResultsTable(tmp_path / "results.parquet", "s")
    for i in range(200):
        t.add({"trial_id": f"t{i}", "status": "ok"}, "classifier")
        if i % 25 == 0:
            assert len(read_table(tmp_path / "results.parquet")) == i + 1  # file + parts: complete meanwhile
    assert parts == [1] * 200  # each trial end writes its own row
    assert sum(whole) <= 5 * 200  # whole-file rewrites: O(1) rows per trial end, amortised (was 200 * 201 / 2)
    assert whole[-1] >= 150  # and results.parquet itself lags by at most a quarter of its rows
    t.write()
    assert not list((tmp_path / "results.parts").glob("*"))
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 200


def test_store_errors_in_results_publishing_never_reach_tune_and_the_end_flushes(s3_store, monkeypatch):
    from analysis.load import read_table
    from sweeps import objects
    from sweeps.results import ResultsCallback, ResultsTable

    monkeypatch.setattr(objects, "RETRY", objects.Retry(attempts=2, first_wait_s=0.01))
    store = s3_store("driver")
    client = store._objects().client
    real_upload, failures = client.upload_file, {"left": 2}

    def flaky(src, bucket, key, *a, **kw):  # the store fails both tries of one publish, then heals
        if failures["left"] and "/results" in key:
            failures["left"] -= 1
            raise ConnectionResetError("injected: connection reset by peer")
        return real_upload(src, bucket, key, *a, **kw)

    monkeypatch.setattr(client, "upload_file", flaky)
    table = ResultsTable(store.local("results.parquet"), "s", store=store)
    cb = ResultsCallback(table)
    for i in range(3):
        trial = SimpleNamespace(trial_id=f"t{i}", config={"arm": "baseline", "seed": i})
        cb.on_trial_result(0, [], trial, {"phase": "final", "status": "ok", "val_f1": 0.5})
        cb.on_trial_complete(0, [], trial)  # must not raise
    assert table.dirty
    cb.on_experiment_end([])
    assert not table.dirty
    other = s3_store("reader")
    other.fetch("results.parquet")
    df = read_table(other.local("results.parquet"))
    assert sorted(df["trial_id"]) == ["t0", "t1", "t2"] and (df["status"] == "ok").all()


def test_a_callback_error_is_logged_not_raised(tmp_path, capsys):
    from sweeps.results import ResultsCallback, ResultsTable

    table = ResultsTable(tmp_path / "results.parquet", "s")
    table.add = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    cb = ResultsCallback(table)
    cb.on_trial_error(0, [], SimpleNamespace(trial_id="t9", config={}, get_error=lambda: None, error_file=None))
    assert "t9" in capsys.readouterr().err


def test_one_gan_row_per_key_even_when_its_trainers_row_was_lost(tmp_path):
    from sweeps.results import ResultsTable

    t = ResultsTable(tmp_path / "results.parquet", "s")
    reuse = {"trial_id": "t2", "arm": "gan", "gan_key": "g1", "gan_run_dir": "s3://b/gans/g1/a-x", "status": "ok",
             "gan_trained_here": False, "gan_loss": "bce"}
    t.add(reuse, "classifier")  # the trainer's row died with its driver: the reuser brings the gan row
    t.add({**reuse, "trial_id": "t3"}, "classifier")  # a second reuser adds none
    t.add({**reuse, "trial_id": "t1", "gan_trained_here": True}, "classifier")  # the trainer's own, late: it wins
    t.write()
    gan = pd.read_parquet(tmp_path / "results.parquet").query("stage == 'gan'")
    assert len(gan) == 1 and gan.iloc[0]["trial_id"] == "t1"


# ---------------------------------------------------------------- hostile results, cluster.yaml, README, docs

@pytest.mark.parametrize("named", ["s3://x?endpoint_override=evil.example:80&scheme=http",
                                   "s3://bucket/sweeps/s/classifiers/../../../other/run", "../../../etc",
                                   "gs://bucket/run#x"])
def test_a_hostile_clf_run_dir_is_refused_before_anything_is_opened(named, tmp_path, monkeypatch):
    import sys

    import pyarrow

    from analysis.runs import Run, read_run

    opened = []
    fake = SimpleNamespace(FileSystem=SimpleNamespace(from_uri=lambda uri: opened.append(uri)))
    monkeypatch.setattr(pyarrow, "fs", fake, raising=False)  # a client built for the URI would be recorded here
    monkeypatch.setitem(sys.modules, "pyarrow.fs", fake)
    run = Run(seed=0, fold=None, test_f1=0.5, named=named)
    read_run(run, tmp_path)
    assert run.dir is None and opened == []
    assert re.search(r"refused", run.problems[0]), run.problems


def test_cluster_yaml_marks_every_placeholder_and_keeps_credentials_out_of_shell_profiles():
    text = (ROOT / "cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    for line in text.splitlines():
        if re.search(r"ami-[0-9a-f]+|ACCOUNT_ID|BUCKET|MINIO_HOST", line.split("#")[0]):
            assert re.search(r"PLACEHOLDER|replace", line), f"unmarked placeholder: {line.strip()}"
    commands = "\n".join(cfg.get("setup_commands", []) + cfg.get("initialization_commands", []))
    assert not re.search(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)", commands)
    for line in text.splitlines():  # commented-out suggestions too: no key ever goes into a shell profile
        if re.search(r"bashrc|profile", line):
            assert not re.search(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID)|SECRET", line), line


def test_long_sweeps_are_submitted_so_they_survive_the_ssh_session():
    for path in ("README.md", "docs/cluster.md", "cluster.yaml"):
        text = (ROOT / path).read_text()
        submits = re.findall(r"ray (?:job )?submit (?:--|cluster\.yaml)[^\n]*", text)  # commands, not prose
        assert submits, path
        for cmd in submits:
            assert "--tmux" in cmd or "ray job submit" in cmd, f"{path}: {cmd}"
