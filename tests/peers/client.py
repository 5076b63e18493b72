#!/usr/bin/env python3
"""A real MCP client (the official Python `mcp` SDK) that drives one scenario
against a stdio MCP server and prints ONE JSON object describing what happened.

    client.py SCENARIO [ARG...] -- COMMAND [COMMAND_ARG...]

COMMAND is the stdio server: `mcpgate connect NAME` when testing the gateway,
or `node .../server-everything/dist/index.js stdio` for a direct baseline. It
gets this process's whole environment (so MCPGATE_HOME etc. reach it).

The client is `mcp.Client` in its default `mode="auto"`: exactly what an
application using the SDK gets. That mode sends `server/discover` first and
falls back to `initialize` on a handshake-era server (see
`mcp/client/_probe.py`). A tap on the transport records the first messages in
each direction, so the output shows how the connection was negotiated.

Scenarios:
  basic       list tools, call `echo` and `get-sum`
  sampling    call `trigger-sampling-request`; answer the server's
              `sampling/createMessage` from a sampling callback
  progress    call `trigger-long-running-operation` with a progress callback
  cancel [S]  start `trigger-long-running-operation` (S seconds), cancel it after
              its first progress notification, wait for the upstream to finish
              the operation, then `echo`; report any late result for the call
  env         call `get-env` and return the server's environment
  demo        (mcpgate-broker demo-server) list tools, call `list_customers`
  timing N    N `echo` calls; connect time and per-call latencies in µs

Exit status 0 with {"ok": true, ...}; non-zero with {"ok": false, "error": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp.types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

# Every wait in a scenario is bounded: a hung gateway fails the test instead of
# hanging it.
STEP_TIMEOUT_S = 30.0
SAMPLED_TEXT = "sampled by the mcpgate test client"
SAMPLED_MODEL = "mcpgate-test-model"


class Tap:
    """Records what crosses the transport, with timestamps relative to spawn."""

    def __init__(self) -> None:
        self.t_spawn: float | None = None
        self.t_first_in: float | None = None
        self.messages: list[dict[str, Any]] = []

    def record(self, direction: str, item: SessionMessage | Exception) -> None:
        now = time.perf_counter()
        if isinstance(item, Exception):
            self.messages.append({"dir": direction, "transport_error": repr(item)})
            return
        raw = item.message.model_dump(by_alias=True, mode="json", exclude_none=True)
        if direction == "in" and self.t_first_in is None:
            self.t_first_in = now
        entry: dict[str, Any] = {"dir": direction}
        for key in ("id", "method"):
            if key in raw:
                entry[key] = raw[key]
        if "error" in raw:
            entry["error"] = raw["error"]
        if "result" in raw:
            entry["result_keys"] = sorted(raw["result"].keys()) if isinstance(raw["result"], dict) else None
            if isinstance(raw["result"], dict) and "protocolVersion" in raw["result"]:
                entry["protocolVersion"] = raw["result"]["protocolVersion"]
            if isinstance(raw["result"], dict) and "supportedVersions" in raw["result"]:
                entry["supportedVersions"] = raw["result"]["supportedVersions"]
        if raw.get("method") in ("notifications/cancelled", "notifications/progress"):
            entry["params"] = raw.get("params")
        if self.t_spawn is not None:
            entry["t_us"] = int((now - self.t_spawn) * 1e6)
        self.messages.append(entry)


@asynccontextmanager
async def tapped_stdio(params: StdioServerParameters, tap: Tap):
    """`stdio_client` with every message passing through `tap`."""
    tap.t_spawn = time.perf_counter()
    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        to_session, session_read = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        session_write, from_session = anyio.create_memory_object_stream[SessionMessage](0)

        async def pump_in() -> None:
            async with to_session:
                async for item in read:
                    tap.record("in", item)
                    await to_session.send(item)

        async def pump_out() -> None:
            async with from_session:
                async for item in from_session:
                    tap.record("out", item)
                    await write.send(item)
            await write.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_in)
            tg.start_soon(pump_out)
            try:
                yield session_read, session_write
            finally:
                tg.cancel_scope.cancel()


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def texts(result: types.CallToolResult) -> list[str]:
    return [c.text for c in result.content if isinstance(c, types.TextContent)]


def call_summary(result: types.CallToolResult) -> dict[str, Any]:
    out: dict[str, Any] = {"is_error": bool(result.is_error), "text": texts(result)}
    if result.structured_content is not None:
        out["structured"] = result.structured_content
    return out


def handshake_of(client: Client, tap: Tap, t_ready: float) -> dict[str, Any]:
    session = client.session
    mode = "discover" if session.discover_result is not None else "initialize"
    # The messages sent before the session was ready, in order: this is the
    # proof of discover-first (and of the fallback when there was one).
    before = [m for m in tap.messages if m.get("t_us", 0) <= int((t_ready - tap.t_spawn) * 1e6)]
    discover_reply = None
    discover_ids = [m["id"] for m in before if m["dir"] == "out" and m.get("method") == "server/discover"]
    for m in before:
        if m["dir"] == "in" and "id" in m and m["id"] in discover_ids and "method" not in m:
            discover_reply = {k: v for k, v in m.items() if k in ("error", "supportedVersions")}
    info = client.server_info
    return {
        "mode": mode,
        "protocol_version": client.protocol_version,
        "server_info": dump(info) if info is not None else None,
        "sent_before_ready": [m["method"] for m in before if m["dir"] == "out" and "method" in m],
        "discover_reply": discover_reply,
        "connect_us": int((t_ready - tap.t_spawn) * 1e6),
        "first_response_us": int((tap.t_first_in - tap.t_spawn) * 1e6) if tap.t_first_in else None,
    }


async def scenario_basic(client: Client, _args: list[str], _tap: Tap) -> dict[str, Any]:
    tools = await client.list_tools()
    echo = await client.call_tool("echo", {"message": "hello through the gate"})
    total = await client.call_tool("get-sum", {"a": 2, "b": 40})
    return {
        "tools": [t.name for t in tools.tools],
        "echo": call_summary(echo),
        "sum": call_summary(total),
    }


async def scenario_sampling(client: Client, args: list[str], _tap: Tap, seen: list[dict[str, Any]]) -> dict[str, Any]:
    tools = await client.list_tools()
    prompt = args[0] if args else "say something"
    result = await client.call_tool("trigger-sampling-request", {"prompt": prompt, "maxTokens": 16})
    return {
        "tools": [t.name for t in tools.tools],
        "sampling_requests_seen": seen,
        "result": call_summary(result),
    }


async def scenario_progress(client: Client, args: list[str], _tap: Tap) -> dict[str, Any]:
    steps = int(args[0]) if args else 4
    updates: list[dict[str, Any]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append({"progress": progress, "total": total, "message": message})

    result = await client.call_tool(
        "trigger-long-running-operation",
        {"duration": steps * 0.1, "steps": steps},
        progress_callback=on_progress,
    )
    return {"progress": updates, "result": call_summary(result)}


async def scenario_cancel(client: Client, args: list[str], tap: Tap) -> dict[str, Any]:
    # The upstream tool keeps running after a cancel (server-everything does
    # not check its abort signal) but its SDK then never sends the result. So
    # a cancel that reached the upstream shows as: the final progress
    # notification arrives, yet no response for the call ever does.
    duration = float(args[0]) if args else 2.0
    steps = 4
    started = anyio.Event()
    outcome: dict[str, Any] = {"completed": False}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        outcome.setdefault("first_progress", progress)
        started.set()

    async def long_call() -> None:
        await client.call_tool(
            "trigger-long-running-operation",
            {"duration": duration, "steps": steps},
            progress_callback=on_progress,
        )
        outcome["completed"] = True

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(long_call)
        # The call is really running upstream once progress arrives; cancel it
        # the way an application does: by cancelling the awaiting scope. The
        # SDK then sends `notifications/cancelled` for the request.
        with anyio.fail_after(STEP_TIMEOUT_S):
            await started.wait()
        tg.cancel_scope.cancel()
    cancelled_after_us = int((time.perf_counter() - t0) * 1e6)

    calls = [m for m in tap.messages if m["dir"] == "out" and m.get("method") == "tools/call"]
    long_id = calls[0]["id"] if calls else None
    cancels = [m for m in tap.messages if m["dir"] == "out" and m.get("method") == "notifications/cancelled"]

    def final_progress_seen() -> bool:
        return any(
            m["dir"] == "in"
            and m.get("method") == "notifications/progress"
            and (m.get("params") or {}).get("progress") == steps
            for m in tap.messages
        )

    # Wait (bounded) until the upstream has finished the operation: its last
    # progress notification, or the operation's duration plus a grace period.
    deadline = t0 + duration + 3.0
    while not final_progress_seen() and time.perf_counter() < deadline:
        await anyio.sleep(0.02)
    # Anything the upstream wrote for the call came before this echo's answer.
    echo = await client.call_tool("echo", {"message": "still here after cancel"})
    late = [m for m in tap.messages if m["dir"] == "in" and "method" not in m and m.get("id") == long_id]
    return {
        "completed": outcome["completed"],
        "first_progress": outcome.get("first_progress"),
        "cancelled_after_us": cancelled_after_us,
        "long_call_id": long_id,
        "cancel_notifications": [m.get("params") for m in cancels],
        "final_progress_seen": final_progress_seen(),
        "late_responses_for_cancelled_call": late,
        "echo_after_cancel": call_summary(echo),
    }


async def scenario_env(client: Client, _args: list[str], _tap: Tap) -> dict[str, Any]:
    result = await client.call_tool("get-env", {})
    text = "".join(texts(result))
    try:
        env = json.loads(text)
    except json.JSONDecodeError:
        env = None
    return {"env": env, "text": text if env is None else None}


async def scenario_demo(client: Client, _args: list[str], _tap: Tap) -> dict[str, Any]:
    tools = await client.list_tools()
    customers = await client.call_tool("list_customers", {})
    return {
        "tools": [t.name for t in tools.tools],
        "tool_list": [dump(t) for t in tools.tools],
        "list_customers": call_summary(customers),
    }


async def scenario_timing(client: Client, args: list[str], _tap: Tap) -> dict[str, Any]:
    n = int(args[0]) if args else 50
    latencies: list[int] = []
    for i in range(n):
        t0 = time.perf_counter()
        result = await client.call_tool("echo", {"message": f"ping {i}"})
        latencies.append(int((time.perf_counter() - t0) * 1e6))
        if texts(result) != [f"Echo: ping {i}"]:
            raise RuntimeError(f"unexpected echo result: {texts(result)}")
    return {"calls": n, "latencies_us": latencies}


SCENARIOS = {
    "basic": scenario_basic,
    "sampling": scenario_sampling,
    "progress": scenario_progress,
    "cancel": scenario_cancel,
    "env": scenario_env,
    "demo": scenario_demo,
    "timing": scenario_timing,
}


async def run(scenario: str, args: list[str], command: list[str]) -> dict[str, Any]:
    tap = Tap()
    seen_sampling: list[dict[str, Any]] = []

    async def sampling_callback(_ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen_sampling.append(
            {
                "messages": [dump(m) for m in params.messages],
                "max_tokens": params.max_tokens,
                "system_prompt": params.system_prompt,
            }
        )
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLED_TEXT),
            model=SAMPLED_MODEL,
            stop_reason="endTurn",
        )

    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    client = Client(
        tapped_stdio(params, tap),
        read_timeout_seconds=STEP_TIMEOUT_S,
        sampling_callback=sampling_callback if scenario == "sampling" else None,
        cache=None,
    )
    with anyio.fail_after(STEP_TIMEOUT_S * 3):
        async with client:
            t_ready = time.perf_counter()
            handshake = handshake_of(client, tap, t_ready)
            fn = SCENARIOS[scenario]
            if scenario == "sampling":
                body = await fn(client, args, tap, seen_sampling)
            else:
                body = await fn(client, args, tap)
    return {"ok": True, "scenario": scenario, "handshake": handshake, **body}


def flatten(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == 0:
        print(json.dumps({"ok": False, "error": f"usage: client.py SCENARIO [ARG...] -- COMMAND [ARG...]"}))
        return 2
    split = argv.index("--")
    scenario, args, command = argv[0], argv[1:split], argv[split + 1 :]
    if scenario not in SCENARIOS or not command:
        print(json.dumps({"ok": False, "error": f"unknown scenario {scenario!r}; one of {sorted(SCENARIOS)}"}))
        return 2
    try:
        out = anyio.run(run, scenario, args, command)
    except BaseException as e:  # noqa: BLE001 — every failure becomes one JSON line
        inner = flatten(e)
        err: dict[str, Any] = {"ok": False, "scenario": scenario, "error": str(inner) or repr(inner), "type": type(inner).__name__}
        if isinstance(inner, MCPError):
            err["code"] = inner.code
        traceback.print_exception(e, file=sys.stderr)
        print(json.dumps(err))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
