"""`visiontune serve`: the model behind a URL, a thin layer over `visiontune.serving.serve`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import app


@app.command()
def serve(
    model: Path = typer.Argument(..., metavar="MODEL", help="An exported model (model.vt) or a run folder holding one."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 "
                             "every network interface (then set an API key)."),
    port: int = typer.Option(8000, help="Port to listen on; 0 picks a free one (the URL is printed)."),
    max_batch: int = typer.Option(32, "--max-batch", help="Most images per forward pass (1 turns batching off)."),
    max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", help="Longest wait for a batch to fill, in ms."),
    max_bytes: str = typer.Option("10MB", "--max-bytes", help="Largest request body (e.g. 10MB, 512KB); larger "
                                  "ones get 413 before they are read."),
    max_pixels: str = typer.Option("40M", "--max-pixels", help="Largest image, in pixels (e.g. 40M); checked from "
                                   "the header before decoding."),
    max_files: int = typer.Option(64, "--max-files", help="Most files in one request."),
    queue_size: int = typer.Option(256, "--queue-size", help="Most images in the server at once; more get 503 with "
                                   "Retry-After."),
    top_k: int = typer.Option(5, "--top-k", help="Classes listed per image (a request may ask ?top_k=N)."),
    tta: bool = typer.Option(False, "--tta", help="Test-time augmentation (as learn.tta: n=4, beta=0.25): about 5x "
                             "the compute per image."),
    backend: str = typer.Option("torch", help="torch, or onnx (onnxruntime on the model's ONNX export, made once "
                                "and cached; needs visiontune[onnx])."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the model (default: one less "
                                          "than the CPUs available, at least 1: the spare core decodes uploads, and "
                                          "the model stays fast when another process is busy)."),
    decode_threads: Optional[int] = typer.Option(None, "--decode-threads", help="Threads that decode uploads "
                                                 "(default: up to 4)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 or mps for --backend torch (default: best "
                                         "available)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="VISIONTUNE_API_KEY", show_envvar=True,
                                          help="Require this key (header 'Authorization: Bearer KEY' or "
                                          "'X-API-Key: KEY') on /predict, /info and /metrics."),
    cors: List[str] = typer.Option([], "--cors", metavar="ORIGIN", help="Let pages from ORIGIN call the API from "
                                   "a browser (repeat for several; off by default)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn's access log)."),
) -> None:
    """Serve MODEL over HTTP: an upload page at /, POST /predict (multipart field `file`, repeated for several
    images, or a raw image body) answering JSON, and /health, /ready, /info, /metrics, /openapi.json.

    Concurrent requests share forward passes (micro-batching). Stop with Ctrl-C or SIGTERM: requests in flight
    finish first. Example: `curl -F file=@cat.jpg http://127.0.0.1:8000/predict`."""
    from ..serving.server import serve as run

    run(model, host, port, max_batch=max_batch, max_wait_ms=max_wait_ms, max_bytes=max_bytes, max_pixels=max_pixels,
        max_files=max_files, queue_size=queue_size, top_k=top_k, tta=tta, backend=backend, threads=threads,
        decode_threads=decode_threads, device=device, api_key=api_key, cors=tuple(cors), access_log=access_log)
