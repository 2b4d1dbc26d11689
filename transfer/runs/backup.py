"""A backup run: source -> archive -> storage, one collection at a time or several in
parallel, with the manifest written last as the commit marker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from datetime import UTC, datetime
from typing import Any

from transfer.archive.crypto import Keyring, Signer, aead_context
from transfer.archive.format import ArchiveWriter
from transfer.errors import SourceError, Stopped
from transfer.ports import BackupSession, Source
from transfer.runs.contract import (
    COLLECTION_FAULTS,
    VERSION,
    BackupResult,
    CollectionFailed,
    Report,
    ShouldStop,
    failure_reason,
    select_collections,
)
from transfer.runs.prefetch import prefetch
from transfer.storage import Storage
from transfer.storage.layout import manifest_key, signature_key


def run_backup(
    source: Source,
    storage: Storage,
    archive_key: str,
    include: list[str],
    exclude: list[str],
    header: dict[str, Any],
    report: Report,
    should_stop: ShouldStop,
    codec: str = "gzip",
    level: int = 6,
    parallel: int = 1,
    keyring: Keyring | None = None,
    signer: Signer | None = None,
    before_commit: Callable[[], None] = lambda: None,
) -> BackupResult:
    """Collections compress in parallel (up to `parallel`) when the source session allows
    it; the tar is still written by this thread alone, member by member.

    With a keyring that has an encryption key the tar is encrypted on its way to the
    store; the manifest says with which key id, and the result's sha256 and bytes are
    those of the stored (encrypted) object."""
    writer = storage.open_writer(archive_key)
    snapshot_id = str(header.get("snapshot_id") or "")
    context = aead_context(archive_key, snapshot_id) if snapshot_id else b""
    encrypted = (
        keyring.encrypting(writer, context=context) if keyring is not None and keyring.key_id else None
    )
    if encrypted is not None:
        assert keyring is not None
        header = {**header, "encryption": keyring.manifest_entry(bound=bool(context))}
    sink = encrypted or writer
    archive: ArchiveWriter | None = None
    committed = False
    manifest_version: str | None = None
    consumed = 0
    failed: dict[str, str] = {}  # collection -> reason, when the source isolates collections
    started = datetime.now(UTC)
    lock = threading.Lock()  # progress, stop checks and counters are shared by the stagers
    abort = threading.Event()

    def on_raw(n: int) -> None:
        nonlocal consumed
        with lock:
            consumed += n

    try:
        with source.open() as session:
            estimates = session.estimates()
            names = select_collections(estimates, include, exclude, source.name)
            total = sum(estimates[n] for n in names) or 1
            definitions = {name: session.definition(name) for name in names}
            archive = ArchiveWriter(sink, source_kind=source.kind, codec=codec, level=level)
            workers = min(parallel, len(names)) if session.parallel_safe else 1
            schema = _Schema(session, names, archive, overlap=workers > 1)

            isolated = session.isolated_collections

            def chunks(name: str) -> Iterator[bytes]:
                try:
                    for chunk in prefetch(session.read_chunks(name, on_raw)):
                        with lock:
                            if abort.is_set() or should_stop():
                                raise Stopped
                        yield chunk
                        with lock:  # after the chunk was counted, so items never lag the percent
                            percent = min(99.0, 100.0 * consumed / total)
                            report(archive.items, archive.bytes_so_far, percent, name)
                except COLLECTION_FAULTS as e:
                    if not isolated:
                        raise
                    raise CollectionFailed(name, failure_reason(e)) from e

            if workers <= 1:
                schema.written()
                for name in names:
                    try:
                        archive.add_collection(name, chunks(name), definitions[name])
                    except CollectionFailed as e:
                        failed[e.name] = e.reason
            else:  # biggest first, as pg_dump -j orders them: the last to finish is a small one
                by_size = sorted(names, key=lambda n: -estimates[n])
                try:
                    _stage_in_parallel(
                        archive, by_size, chunks, definitions, workers, abort, failed, schema.written
                    )
                finally:
                    schema.close()
            schema.written()
            moment = session.point_in_time()
            if moment.changes is not None:
                archive.add_changes(_until_stopped(moment.changes, should_stop))
        if should_stop():
            raise Stopped
        if failed and len(failed) == len(names):
            raise SourceError("every collection failed: " + "; ".join(f"{n}: {r}" for n, r in failed.items()))
        manifest, sha256, size = archive.finish(
            {
                **header,
                **({"failed_collections": failed} if failed else {}),
                "source_kind": source.kind,
                "point_in_time": moment.as_dict(),
                "started_at": started.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
                "snapledger_version": VERSION,
            }
        )
        before_commit()  # a fenced attempt raises here, before it replaces a newer one's archive
        sink.commit()
        committed = True
        if signer is not None:  # before the manifest: a committed archive is always signed
            storage.put_bytes(signature_key(archive_key), signer.sign(manifest))
        manifest_version = storage.put_bytes(manifest_key(archive_key), manifest)
    except BaseException:
        if committed:
            storage.delete(archive_key)
            if signer is not None:
                storage.delete(signature_key(archive_key))
        else:
            if archive is not None:
                archive.discard()
            sink.abort()
        raise
    if encrypted is not None:
        sha256, size = encrypted.sha256, encrypted.bytes_written
    collections = {
        e.name: {"items": e.items, "bytes": e.bytes, "raw_bytes": e.raw_bytes, "sha256": e.sha256}
        for e in archive.entries
    }
    return BackupResult(
        sum(e.items for e in archive.entries),
        size,
        sha256,
        collections,
        manifest,
        failed,
        writer.version_id,
        manifest_version,
        moment.as_dict(),
    )


def _until_stopped(chunks: Iterator[bytes], should_stop: ShouldStop) -> Iterator[bytes]:
    for chunk in chunks:
        if should_stop():
            raise Stopped
        yield chunk


class _Schema:
    """A source's database-wide schema members (PostgreSQL: pg_dump's dump and state). They
    lead the archive; with collections staging in parallel they are taken meanwhile, in a
    thread of their own, and written just before the first collection."""

    def __init__(
        self, session: BackupSession, names: list[str], archive: ArchiveWriter, overlap: bool
    ) -> None:
        self.archive = archive
        self.done = not session.has_schema
        self.pool: ThreadPoolExecutor | None = None
        self.future: Any = None
        if self.done:
            return
        take = lambda: session.schema_members(names, archive.codec)  # noqa: E731
        if overlap:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="schema")
            self.future = self.pool.submit(take)
        else:
            self.future = take

    def written(self) -> None:
        if self.done:
            return
        self.done = True
        members = self.future() if callable(self.future) else self.future.result()
        for member, data in members:
            self.archive.add_schema(member, data)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _stage_in_parallel(
    archive: ArchiveWriter,
    names: list[str],
    chunks: Callable[[str], Iterator[bytes]],
    definitions: dict[str, bytes | None],
    workers: int,
    abort: threading.Event,
    failed: dict[str, str],
    before_append: Callable[[], None] = lambda: None,
) -> None:
    with ThreadPoolExecutor(workers, thread_name_prefix="stage") as pool:
        futures = [pool.submit(archive.stage, n, chunks(n), definitions[n]) for n in names]
        try:
            for future in as_completed(futures):
                try:
                    staged = future.result()
                except CollectionFailed as e:
                    failed[e.name] = e.reason
                    continue
                before_append()
                archive.append(staged)
        except BaseException:
            abort.set()  # the other stagers stop at their next chunk
            for future in futures:
                future.cancel()
            wait(futures)
            for future in futures:
                if future.done() and not future.cancelled() and future.exception() is None:
                    future.result().file.close()
            raise


def remove_archive(storage: Storage, archive_key: str) -> None:
    """Manifest first: without it, whatever remains is recognisably incomplete."""
    storage.delete(manifest_key(archive_key))
    storage.delete(archive_key)
    storage.delete(signature_key(archive_key))
