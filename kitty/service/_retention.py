"""Checkpoint retention for a long-running service (``--keep-days``).

Checkpoints keep every query and answer; a service that runs for months must not keep
them for ever unless asked to. One sweep runs at startup (before the first request) and
then one every ``interval_s`` in the background.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack, suppress
from typing import Any

from graph import delete_threads_older_than

logger = logging.getLogger("kitty.service")


async def sweep(checkpointer: Any, keep_days: float) -> list[str]:
    """Delete the threads idle for more than ``keep_days`` days; log what went."""
    deleted = await delete_threads_older_than(checkpointer, keep_days=keep_days)
    if deleted:
        logger.info(
            "retention: deleted %d checkpoint threads idle for more than %g days",
            len(deleted),
            keep_days,
        )
    return deleted


async def sweep_forever(checkpointer: Any, keep_days: float, interval_s: float) -> None:
    """Sweep every ``interval_s`` seconds until cancelled; a failed sweep is logged."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await sweep(checkpointer, keep_days)
        except Exception:  # a broken sweep must not stop the service; the next may work
            logger.exception("retention sweep failed; retrying in %g s", interval_s)


async def start_retention(
    stack: AsyncExitStack, checkpointer: Any, keep_days: float, interval_s: float
) -> None:
    """Sweep once now, then keep sweeping until ``stack`` closes.

    The background sweep is cancelled *and awaited* on close, before the checkpointer
    (entered earlier on the same stack) is closed under it.
    """
    await sweep(checkpointer, keep_days)
    task = asyncio.create_task(sweep_forever(checkpointer, keep_days, interval_s))

    async def stop() -> None:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
