"""``python -m pytest_autotuner.sim --model-path ... [SGLang flags] [--sim-* flags]``: a simulated server.

Startup follows SGLang's log lines. /health answers 503 from the first moment, 200 once the simulated
startup (weights, KV cache, CUDA graphs) is over; a startup failure logs SGLang's message and exits 1.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING

from aiohttp import web

from pytest_autotuner.sim.cli import engine_config, parse_argv, server_info, token_counter, unmodelled
from pytest_autotuner.sim.perf_model import StartupFailure, plan_memory
from pytest_autotuner.sim.server import SimServer

if TYPE_CHECKING:
    import argparse

    from pytest_autotuner.sim.perf_model import EngineConfig, MemoryPlan

logger = logging.getLogger("pytest_autotuner.sim")


def startup_seconds(cfg: EngineConfig) -> float:
    """Simulated startup: ~15 s for 1B, ~42 s for 8B on one GPU (weights load at ~0.5 GB/s per GPU)."""
    graphs = 0.0 if cfg.disable_cuda_graph else 3.0
    factor = cfg.distortion.startup if cfg.distortion is not None else 1.0
    return (7.0 + 2.0 * cfg.model.weight_bytes / 1e9 / cfg.tp + graphs) * factor


async def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = engine_config(args)
        counter = token_counter(args)
    except ValueError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("server_args=ServerArgs(%s)", ", ".join(f"{k}={v!r}" for k, v in vars(args).items()))
    logger.info("simulating SGLang %s; prompt tokens counted by the %s", args.sim_sglang_version, counter.description)
    flags = unmodelled(args, cfg)
    if flags:
        logger.info("flags accepted but not modelled by the simulator (no effect on its figures): %s",
                    ", ".join(flags))  # fmt: skip
    failure: StartupFailure | None = None
    memory: MemoryPlan | None = None
    try:
        memory = plan_memory(cfg)
    except StartupFailure as exc:
        failure = exc
    if failure is not None and failure.kind == "invalid_parallelism":
        logger.error("%s", failure.message)
        return 1

    total = startup_seconds(cfg) * args.sim_startup_scale / args.sim_speedup
    began = args.sim_launched_at if args.sim_launched_at is not None else time.monotonic()
    clock = _StartupClock(began + args.sim_startup_delay)
    server: SimServer | None = None
    if memory is not None:
        info = server_info(args, cfg, memory, counter)
        server = SimServer(args=args, config=cfg, memory=memory, info=info, counter=counter)
    app = server.app() if server is not None else _starting_app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        logger.error(
            "ERROR: [Errno %s] error while attempting to bind on address (%s, %d): %s",
            exc.errno,
            args.host,
            args.port,
            exc.strerror,
        )
        await runner.cleanup()
        return 1
    try:
        await clock.until(0.0)
        logger.info("Load weight begin. avail mem=%.2f GB", cfg.gpu.memory_bytes / 1e9 - 0.5)
        await clock.until(total * 0.65)
        weights_gb = cfg.model.weight_bytes / 1e9 / cfg.tp
        logger.info("Load weight end. type=LlamaForCausalLM, dtype=torch.bfloat16, mem usage=%.2f GB", weights_gb)
        if failure is not None and failure.kind == "kv_cache_oom":
            logger.error("%s", failure.message)
            return 1
        tokens = memory.max_total_num_tokens if memory is not None else 0
        logger.info("KV Cache is allocated. #tokens: %d", tokens)
        if not cfg.disable_cuda_graph:
            logger.info("Capture cuda graph begin. This can take up to several minutes.")
            await clock.until(total * 0.9)
            if failure is not None:
                logger.error("%s", failure.message)
                return 1
            logger.info("Capture cuda graph end.")
        elif failure is not None:
            logger.error("%s", failure.message)
            return 1
        assert memory is not None and server is not None
        await clock.until(total if not cfg.disable_cuda_graph else total * 0.75)
        logger.info(
            "max_total_num_tokens=%d, chunked_prefill_size=%d, max_prefill_tokens=%d, "
            "max_running_requests=%d, context_len=%d, available_gpu_mem=%.2f GB",
            memory.max_total_num_tokens,
            cfg.chunked_prefill_size,
            cfg.max_prefill_tokens,
            memory.max_running_requests,
            cfg.context_len,
            memory.available_gpu_mem_gb,
        )
        logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", args.host, args.port)
        server.start()
        logger.info("The server is fired up and ready to roll!")
        await asyncio.Event().wait()
        return 0
    finally:
        if server is not None:
            await server.stop()
        await runner.cleanup()


class _StartupClock:
    """Startup phases end at fixed offsets from the launch, whatever the simulator's own start-up cost.

    On a 2-core CI machine, eight simulators importing Python at once take seconds of CPU that a GPU
    runner's servers would not wait on; counting from the launch keeps the modelled startup what it is.
    """

    def __init__(self, start: float) -> None:
        self.start = start

    async def until(self, offset: float) -> None:
        await asyncio.sleep(max(0.0, self.start + offset - time.monotonic()))


def _starting_app() -> web.Application:
    """An app that only says 'starting' (the server will fail before it is ready)."""

    async def starting(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", starting)
    return app


def main(argv: list[str] | None = None) -> int:
    args = parse_argv(sys.argv[1:] if argv is None else argv)  # exits 2 on a bad flag, like SGLang
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
    )
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
