"""A workflow whose query handler fails with a message holding a recorded file name that is not UTF-8
(tests/test_ui_errors_holding_recorded_text.py loads it in `replaykit ui -m`)."""

import replaykit as rk

NAME = b"report-\xff.csv".decode("utf-8", "surrogateescape")  # a file name that is not UTF-8


@rk.activity
def listed() -> list[str]:
    return [NAME]


@rk.workflow(name="surrogates.queried")
def queried(ctx: rk.Context):
    names: list[str] = []

    @ctx.query("size")
    def size(name: str) -> int:
        if name not in names:
            raise ValueError(f"no file {name}: the folder holds {', '.join(names)}")
        return 1

    names.extend((yield listed()))

    return (yield rk.wait_signal("done"))
