"""`lungcancer serve`: load the classifier (and optionally the progression GAN), start the page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lungcancer.app.processing import Processor
from lungcancer.app.uploads import UploadLimits
from lungcancer.errors import ConfigError

if TYPE_CHECKING:
    from lungcancer.app.progression_tab import ProgressionRunner


@dataclass
class RunningApp:
    """A started app: its local URL, the Gradio Blocks and the processor behind it."""

    url: str
    blocks: Any
    processor: Processor
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Stop the server and the worker threads; remove the app's temporary files."""
        self.blocks.close()
        self.processor.close()
        for cleanup in self.on_close:
            cleanup()


def serve(
    ckpt: str | Path,
    *,
    gan_ckpt: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    limits: UploadLimits | None = None,
    block: bool = True,
) -> RunningApp:
    """Start the web app for a classifier checkpoint.

    Args:
        ckpt: classifier checkpoint written by `lungcancer train`.
        gan_ckpt: optional progression GAN checkpoint (`lungcancer gan train`): adds the
            simulation section (strip, GIF, timeline) and the `/simulate` endpoint.
        host: interface to listen on; 127.0.0.1 keeps the app on this machine. Use 0.0.0.0
            only behind an authenticating proxy: the app has no login of its own.
        port: TCP port.
        limits: upload caps and processing timeout.
        block: wait until the server stops (False returns at once, for tests and notebooks).

    Returns:
        The running app (once it has stopped, when `block` is True).
    """
    from lungcancer.train.inference import load_classifier

    if not 0 < port < 65536:
        raise ConfigError("the port must be between 1 and 65535", found=str(port))
    clf = load_classifier(ckpt, device="cpu")
    processor = Processor(clf, limits or UploadLimits())
    runner = None
    if gan_ckpt is not None:
        from lungcancer.app.progression_tab import ProgressionRunner

        runner = ProgressionRunner(gan_ckpt, ckpt, processor)
    return start_app(processor, host=host, port=port, block=block, progression=runner)


def start_app(
    processor: Processor,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    progression: ProgressionRunner | None = None,
) -> RunningApp:
    """Build the page around `processor` and start serving it.

    Args:
        processor: the loaded classifier with its upload limits.
        host: interface to listen on.
        port: TCP port.
        block: wait until the server stops.
        progression: optional GAN runner for the simulation section.

    Returns:
        The running app (once it has stopped, when `block` is True).
    """
    from lungcancer.app.ui import CSS, build_app

    simulate_tab = None
    if progression is not None:
        from lungcancer.app.progression_tab import progression_section

        simulate_tab = progression_section(progression)
    blocks = build_app(processor, simulate_tab=simulate_tab)
    blocks.queue(default_concurrency_limit=1)
    _, url, _ = blocks.launch(
        server_name=host,
        server_port=port,
        max_file_size=processor.limits.max_upload_bytes,
        prevent_thread_lock=True,
        show_error=False,
        quiet=True,
        ssr_mode=False,
        css=CSS,
    )
    running = RunningApp(url=str(url), blocks=blocks, processor=processor)
    if progression is not None:
        running.on_close.append(progression.close)
    if block:
        try:
            blocks.block_thread()
        finally:
            running.close()
    return running
