"""``meguri keys generate|rotate|status``: the keys that encrypt artifacts at rest.

A key file holds one key per line (``id:base64``), the first the current one; point
``MEGURI_ENCRYPTION_KEY_FILE`` at it and every artifact is stored encrypted. Rotating adds a
new current key at the top and re-encrypts every object with it, one atomic rewrite per
object; an interrupted rotation is finished by running it again with ``--resume``. The old
key stays in the file (objects still under it remain readable) until ``--remove-old`` drops
it, which is refused while any object still needs it.

Order of a rotation with servers running: ``meguri keys rotate --key-file F`` (new key on
top, objects re-encrypted), restart the processes that write artifacts so that they seal with
the new key, then ``meguri keys rotate --key-file F --resume --remove-old`` to re-encrypt what
they wrote meanwhile and drop the old key.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from meguri.errors import ConfigError

if TYPE_CHECKING:
    from meguri.store.artifacts import EncryptedArtifactStore, KeyRing, RotationReport

keys_app = typer.Typer(
    help="Encryption keys for artifacts at rest: generate, rotate, status.",
    no_args_is_help=True,
)

KeyFile = Annotated[
    Path,
    typer.Option(
        "--key-file",
        envvar="MEGURI_ENCRYPTION_KEY_FILE",
        help="The key file (default: $MEGURI_ENCRYPTION_KEY_FILE).",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


@keys_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", help="The key file to create (mode 600).")],
    key_id: Annotated[
        str | None, typer.Option("--id", help="The key's id (default: k<date>-<random>).")
    ] = None,
) -> None:
    """Create a key file holding one new random key (never overwrites a file)."""
    from meguri.store.artifacts._keys import create_key_file, new_key

    key = new_key(key_id)
    path = create_key_file(out, [key])
    _console().print(
        f"Wrote key [bold]{key.id}[/] to {path} (mode 600). Turn encryption on with\n"
        f"  export MEGURI_ENCRYPTION_KEY_FILE={path}\n"
        "and keep a copy of this file somewhere safe: without it the artifacts stored "
        "with this key cannot be read."
    )


@keys_app.command("rotate")
def rotate(
    key_file: KeyFile,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Add no new key: re-encrypt what is not yet under the current (first) key "
            "(finishes an interrupted rotation; encrypts a store written in clear).",
        ),
    ] = False,
    remove_old: Annotated[
        bool,
        typer.Option("--remove-old", help="Then drop every key but the current one from the file."),
    ] = False,
) -> None:
    """Add a new current key and re-encrypt every artifact with it, object by object."""
    from meguri.store.artifacts._keys import new_key, read_key_file, replace_key_file

    ring = read_key_file(key_file)
    console = _console()
    if not resume:
        key = new_key()
        replace_key_file(key_file, [key, *ring.keys])
        console.print(f"Added key [bold]{key.id}[/] as the current key of {key_file}.")
    store = _store(key_file)
    report = _reencrypt(store)
    _print_report(console, store, report)
    captures = _reseal_captures(console, store.keys)
    _warn_plain_cache(console)
    if not report.done or captures.failed:
        raise typer.Exit(1)
    if remove_old:
        current = store.keys.current
        replace_key_file(key_file, [current])
        console.print(f"Removed the old keys: {key_file} now holds only {current.id}.")
    elif len(store.keys.keys) > 1:
        console.print(
            "The old keys are still in the file. Once every process that writes artifacts "
            "has been restarted with it, drop them: meguri keys rotate --key-file "
            f"{key_file} --resume --remove-old"
        )


@keys_app.command("status")
def status(key_file: KeyFile) -> None:
    """How many artifacts each key encrypts (and how many are stored in clear)."""
    store = _store(key_file)
    counts = Counter(store.key_of(digest) or "(plaintext)" for digest in store.digests())
    table = Table(title=f"Artifacts in {store.url}")
    table.add_column("key")
    table.add_column("objects", justify="right")
    table.add_column("in the key file")
    for key_id, count in counts.most_common():
        held = _held(store.keys, key_id)
        table.add_row(key_id, str(count), held)
    console = _console()
    console.print(table if counts else f"No artifacts in {store.url}.")
    _warn_plain_cache(console)


def _reseal_captures(console: Console, keys: KeyRing) -> RotationReport:
    """Seal the workspace's prediction captures, system samples and feedback (every
    environment under ``.meguri/capture``) with the current key, as the artifacts were: an old
    key may only be dropped once nothing needs it. Captures kept elsewhere (``--capture-url``)
    need :func:`meguri.serve._sealed_parts.reseal_parts` on their own folder."""
    from meguri.serve._sealed_parts import reseal_parts
    from meguri.store._workspace import STATE_DIR, find_root

    folder = find_root() / STATE_DIR / "capture"
    done = reseal_parts(str(folder), keys)
    console.print(
        f"{folder}: {done.resealed} capture files re-encrypted with {done.key_id}, "
        f"{done.encrypted} encrypted (were in clear), {done.current} already under it, "
        f"{len(done.failed)} failed."
    )
    for path, reason in done.failed.items():
        console.print(f"[red]failed[/] {path}: {reason}", soft_wrap=True)
    return done


def _warn_plain_cache(console: Console) -> None:
    """Name what was left in clear from before encryption was on (not deleted here: it is the
    user's folder): the package cache (packages are now cached in memory) and retraining
    tables (now kept in memory until the pipeline has stored them)."""
    from meguri.store._workspace import STATE_DIR, find_root

    state = find_root() / STATE_DIR
    cache = state / "cache" / "models"
    if cache.is_dir() and any(path.is_file() for path in cache.rglob("*")):
        console.print(
            f"[yellow]warning:[/] {cache} holds model packages in clear, cached before "
            f"encryption was on; delete it (rm -r {cache}): packages are now cached in memory."
        )
    retrain = state / "retrain"
    if any(retrain.glob("*/data.parquet")):
        console.print(
            f"[yellow]warning:[/] {retrain} holds retraining tables in clear, written before "
            f"encryption was on; delete it (rm -r {retrain}): their data is in the dataset "
            "versions the pipeline stored, which are encrypted."
        )


def _held(ring: KeyRing, key_id: str) -> str:
    if key_id == ring.current.id:
        return "current"
    return "yes" if ring.get(key_id) else ("-" if key_id == "(plaintext)" else "MISSING")


def _store(key_file: Path) -> EncryptedArtifactStore:
    from meguri.store._workspace import open_artifacts
    from meguri.store.artifacts import EncryptedArtifactStore

    store = open_artifacts(encryption_key_file=str(key_file))
    if not isinstance(store, EncryptedArtifactStore):  # pragma: no cover - keys were given
        raise ConfigError("The artifact store was opened without encryption.")
    return store


def _reencrypt(store: EncryptedArtifactStore) -> RotationReport:
    total = sum(1 for _ in store.digests())
    columns = (TextColumn("re-encrypting"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("objects", total=total)
        return store.reencrypt(on_object=lambda _: progress.advance(task))


def _print_report(console: Console, store: EncryptedArtifactStore, report: RotationReport) -> None:
    console.print(
        f"{store.url}: {report.resealed} re-encrypted with {report.key_id}, "
        f"{report.encrypted} encrypted (were in clear), {report.current} already under "
        f"{report.key_id}, {len(report.failed)} failed."
    )
    for digest, reason in report.failed.items():
        console.print(f"[red]failed[/] sha256:{digest}: {reason}", soft_wrap=True)
    if report.failed:
        console.print(
            "The failed objects were left as they were; fix them (see each reason) and run "
            "meguri keys rotate --key-file <file> --resume. Keep the old keys until then."
        )
