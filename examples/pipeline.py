"""A child-workflow pipeline: each document goes through its own child workflow, in parallel.

    python examples/pipeline.py

Each child has an id (`pipeline-1/<step>`) and a history of its own; a failed child
fails only its own branch, which the parent handles.
"""

from __future__ import annotations

import argparse

import replaykit as rk


@rk.activity
def extract(doc: str) -> str:
    if doc == "corrupt.pdf":
        raise ValueError(f"cannot read {doc}")
    return f"text of {doc}"


@rk.activity
def index(text: str) -> int:
    return len(text)


@rk.workflow
def process_document(ctx: rk.Context, doc: str) -> rk.Flow[int]:
    text: str = yield extract(doc)
    size: int = yield index(text)
    return size


@rk.workflow
def pipeline(ctx: rk.Context, docs: list[str]) -> rk.Flow[dict[str, int | str]]:
    outcomes: list[int | str] = yield rk.all(*[rk.child_workflow(guarded, doc) for doc in docs])
    return dict(zip(docs, outcomes, strict=True))


@rk.workflow
def guarded(ctx: rk.Context, doc: str) -> rk.Flow[int | str]:
    try:
        size: int = yield rk.child_workflow(process_document, doc)
        return size
    except rk.WorkflowFailed as exc:
        return f"skipped: {exc.message}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="pipeline.db")
    db = parser.parse_args().db
    docs = ["a.pdf", "corrupt.pdf", "report.pdf"]
    print(rk.run(pipeline, docs, workflow_id="pipeline-1", db=db))


if __name__ == "__main__":
    main()
