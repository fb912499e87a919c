"""The Prefect flow `data_engine_round`: one task per plain step of `pipelines/round_steps.py`.

Tasks that talk to services (Label Studio, Ray) retry; every step is keyed in `pipeline_runs`
(run_key = "<dataset>/round<n>/<step>"), so a re-run (after a failure or a kill -9) skips what
finished and picks up where the last run stopped. Prefect's own result cache is off: the ledger in
the project's database is the one source of truth."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines import round_steps as rs

_ctx: dict = {}


def _c(dataset: str, n: int, seed: int) -> rs.RoundContext:
    key = (dataset, n, seed)
    if key not in _ctx:
        from pipelines.settings import Settings

        _ctx.clear()
        _ctx[key] = rs.RoundContext.build(Settings(), dataset, n, seed)
    return _ctx[key]


def _t(step: str, retries: int = 0):
    def run(dataset: str, round_number: int, seed: int) -> dict:
        return rs.run_round_step(_c(dataset, round_number, seed), step)

    run.__name__ = f"round_{step}"
    return task(name=step, retries=retries, retry_delay_seconds=5, cache_policy=NO_CACHE,
                persist_result=False)(run)


ingest = _t("ingest")
preannotate = _t("preannotate")
push = _t("push", retries=3)
annotate = _t("annotate", retries=2)
sync = _t("sync", retries=3)
repropagate = _t("repropagate")
verify = _t("verify", retries=2)
train = _t("train", retries=1)
gate = _t("gate")
effort = _t("effort", retries=2)


@flow(name="data_engine_round", persist_result=False)
def data_engine_round(dataset: str, round_number: int, seed: int = 0) -> dict:
    """ingest -> preannotate -> push -> annotate (wait) -> sync -> repropagate -> verify (push,
    verdicts, sync) -> train -> gate -> effort"""
    args = (dataset, round_number, seed)
    out = {}
    for name, t in (("ingest", ingest), ("preannotate", preannotate), ("push", push),
                    ("annotate", annotate), ("sync", sync), ("repropagate", repropagate),
                    ("verify", verify), ("train", train), ("gate", gate), ("effort", effort)):
        out[name] = t(*args)
    _ctx.clear()
    return out
