"""The language server: LSP in, engine suggestions out (pygls 2, lsprotocol types).

Handlers stay thin: positions are mapped with the negotiated encoding, the service does the work,
and every failure a request can cause becomes an empty result or an LSP error, never an exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, default_converter

from .model_host import LoadState, ModelHost
from .service import CompletionService
from .settings import Settings, apply, model_changed, unwrap

log = logging.getLogger("spectab.server")

VERSION = "0.1.0"
STATUS_METHOD = "spectab/status"
ACCEPTED_COMMAND = "spectab.accepted"
MAX_DOCUMENT_CHARS = 4_000_000  # larger "documents" are data or generated files, not code to complete


def converter():
    """lsprotocol's converter, tolerant of inline trigger kind 0: older VS Code clients send the
    editor's own enum (0 = invoke, 1 = automatic) instead of LSP's (1 = invoked, 2 = automatic)."""
    conv = default_converter()

    def trigger_kind(value, _type):
        if value in (1, 2):
            return types.InlineCompletionTriggerKind(value)
        return types.InlineCompletionTriggerKind.Invoked

    conv.register_structure_hook(types.InlineCompletionTriggerKind, trigger_kind)
    return conv


class _Dropped:
    """What a request whose params do not parse becomes after its error was answered: pygls
    ignores a message of an unknown JSON-RPC version."""

    jsonrpc = "dropped"


class Protocol(LanguageServerProtocol):
    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except Exception as err:
            # pygls logs params it cannot parse and drops the request, leaving the client waiting
            # forever: answer it with the error instead
            if isinstance(data, dict) and "id" in data and "method" in data:
                detail = first_cause(err)
                self._send_response(data["id"], error=JsonRpcInvalidParams(f"invalid params for {data['method']}: {detail}").to_response_error())
                return _Dropped()
            raise


def first_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    leaves = getattr(err, "exceptions", None)
    while leaves:
        err = leaves[0]
        leaves = getattr(err, "exceptions", None)
    return f"{type(err).__name__}: {err}"


class SpectabServer(LanguageServer):
    def __init__(self, defaults: Settings):
        super().__init__("spectab", VERSION, protocol_cls=Protocol, converter_factory=converter)
        self.settings = defaults
        self.host = ModelHost()
        self.service = CompletionService(self.host, self.tell)
        self._told: set[str] = set()  # messages already shown: each problem is said once
        self.shutdown_requested = False

    # -- messages ------------------------------------------------------------------------------
    def tell(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """Show `message` to the user once per session, and log it."""
        log.warning(message) if kind != types.MessageType.Error else log.error(message)
        if message in self._told:
            return
        self._told.add(message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"spectab: {message}"))

    # -- model loading -------------------------------------------------------------------------
    async def start_loading(self) -> None:
        generation = self.host.begin()
        caps = self.client_capabilities
        can_progress = bool(caps and caps.window and caps.window.work_done_progress)
        token = None
        if can_progress:
            token = str(uuid.uuid4())
            try:
                await self.work_done_progress.create_async(token)  # the client must know it first
            except Exception as err:
                log.info("no progress bar: %s", err)
                token = None
        if token:
            what = self.settings.target or self.settings.profile or "auto"
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="spectab", message=f"loading {what}"))
        loop = asyncio.get_running_loop()  # handlers run on the loop; the load does not

        def progress(message: str) -> None:
            if token:
                loop.call_soon_threadsafe(self.work_done_progress.report, token, types.WorkDoneProgressReport(message=message))

        def done(state: LoadState) -> None:
            loop.call_soon_threadsafe(self._loaded, state, token)

        self.host.load(generation, self.settings, progress, done)

    def _loaded(self, state: LoadState, token: str | None) -> None:
        if token:
            message = "ready" if state.state == "ready" else f"failed: {state.error}"
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        if state.state == "error":
            self.tell(f"no model loaded: {state.error}", types.MessageType.Error)
        else:
            log.info("ready: %s", self.host.backend.describe())

    def status(self, uri: str | None = None) -> dict[str, Any]:
        """The server's state; with `uri`, also the KV lane that document's generations use."""
        b = self.host.backend if self.host.ready else None
        where = b.describe() if b else {}
        out = {
            "state": self.host.status.state,
            "error": self.host.status.error or None,
            "engine": where.get("engine", self.settings.engine if self.settings.engine in ("shared", "inprocess") else "remote"),
            "enginePid": where.get("pid"),
            "engineKey": where.get("key"),
            "engineUrl": where.get("url"),
            "profile": where.get("profile"),
            "target": where.get("target") or where.get("model"),
            "draft": where.get("draft"),
            "device": where.get("device"),
            "quant": where.get("quant"),
            **self.service.stats.as_dict(),
        }
        if uri is not None:
            out["lane"] = self.service.lanes.get(uri)
            out["context"] = [c.split("\n", 1)[0] for c in self.service.workspace.context_for(uri, "")]
            if self.service.debug_prompts:
                out["lastPrompt"] = self.service.last_prompts.get(uri)
        return out

    # -- completion ----------------------------------------------------------------------------
    async def suggest(self, uri: str, position: types.Position, explicit: bool):
        """(answer, document) for a request, or None for an empty result."""
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            raise JsonRpcInvalidParams(f"unknown document {uri}: send textDocument/didOpen first")
        if self.settings.languages and doc.language_id not in self.settings.languages:
            return None
        text = doc.source
        if len(text) > MAX_DOCUMENT_CHARS or "\x00" in text:
            self.tell(f"{uri.rsplit('/', 1)[-1]} is too large or binary; spectab does not complete in it")
            return None
        offset = offset_of(doc, position)
        if offset is None:
            log.info("position %d:%d is outside %s", position.line, position.character, uri)
            return None
        answer = await self.service.suggest(uri, text, offset, explicit, self.settings)
        return (answer, doc) if answer.text else None


def offset_of(doc, position: types.Position) -> int | None:
    """The character offset in `doc.source` of an LSP position in the negotiated encoding (UTF-16
    unless the client chose UTF-8 or UTF-32), or None when it is not inside the document."""
    lines = doc.lines
    if position.line < 0 or position.character < 0 or position.line > len(lines):
        return None
    start = sum(len(line) for line in lines[: position.line])
    if position.line == len(lines):  # the empty line after a final newline
        return start if position.character == 0 and (not lines or lines[-1].endswith("\n")) else None
    line = lines[position.line].rstrip("\r\n")
    units = 0
    for column, ch in enumerate(line):
        if units == position.character:
            return start + column
        units += doc.position_codec.client_num_units(ch)
        if units > position.character:
            return None  # inside a character (half a surrogate pair, a partial UTF-8 sequence)
    return start + len(line) if units == position.character else None


def build(defaults: Settings) -> SpectabServer:
    server = SpectabServer(defaults)

    @server.feature(types.INITIALIZE)
    def initialize(ls: SpectabServer, params: types.InitializeParams) -> None:
        ls.service.workspace.root = workspace_root(params)
        ls.settings, problems = apply(ls.settings, unwrap(params.initialization_options))
        for p in problems:
            ls.tell(p)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: SpectabServer, params: types.InitializedParams) -> None:
        await ls.start_loading()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: SpectabServer, params: types.DidChangeConfigurationParams) -> None:
        raw = unwrap(params.settings)
        if not raw:
            # pull model: the client says "something changed"; ask for our section
            try:
                answer = await ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="spectab")]))
                raw = unwrap(answer[0]) if answer else {}
            except Exception as err:  # a client without workspace/configuration
                log.info("could not pull configuration: %s", err)
                return
        old = ls.settings
        ls.settings, problems = apply(old, raw)
        for p in problems:
            ls.tell(p)
        if ls.settings.threads != old.threads and ls.host.ready:
            ls.host.backend.set_threads(ls.settings.threads)
        if model_changed(old, ls.settings) or ls.host.status.state == "error":
            await ls.start_loading()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: SpectabServer, params: types.DidOpenTextDocumentParams) -> None:
        d = params.text_document
        if len(d.text) <= MAX_DOCUMENT_CHARS:
            ls.service.workspace.opened(d.uri, d.text, d.language_id)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: SpectabServer, params: types.DidChangeTextDocumentParams) -> None:
        # pygls has applied the changes; the ring keeps the text around the last edit
        doc = ls.workspace.text_documents.get(params.text_document.uri)
        edited = [c.range.start.line for c in params.content_changes if getattr(c, "range", None) is not None]
        if doc is not None and edited and len(doc.source) <= MAX_DOCUMENT_CHARS:
            ls.service.workspace.changed(doc.uri, doc.source, edited[-1])

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: SpectabServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.service.forget(params.text_document.uri)

    @server.feature(
        types.TEXT_DOCUMENT_INLINE_COMPLETION,
        # not an empty object: Emacs decodes {} as nil and would think the feature absent
        types.InlineCompletionOptions(work_done_progress=False),
    )
    async def inline_completion(ls: SpectabServer, params: types.InlineCompletionParams):
        explicit = params.context.trigger_kind != types.InlineCompletionTriggerKind.Automatic
        found = await ls.suggest(params.text_document.uri, params.position, explicit)
        if found is None:
            return types.InlineCompletionList(items=[])
        answer, _doc = found
        at = types.Range(start=params.position, end=params.position)
        uri = params.text_document.uri
        items = []
        for i, item in enumerate(answer.items):
            typed = types.InlineCompletionItem(
                insert_text=item.text, range=at,
                command=types.Command(title="spectab: accepted", command=ACCEPTED_COMMAND,
                                      arguments=[{"uri": uri, "chars": len(item.text), **item_data(item, i)}]))
            # LSP 3.18 gives inline items no `data`; clients that do not know it ignore it
            items.append({**ls.protocol._converter.unstructure(typed), "data": item_data(item, i)})
        return {"items": items}

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[]))
    async def completion(ls: SpectabServer, params: types.CompletionParams):
        kind = params.context.trigger_kind if params.context else types.CompletionTriggerKind.Invoked
        found = await ls.suggest(params.text_document.uri, params.position, kind == types.CompletionTriggerKind.Invoked)
        if found is None:
            return types.CompletionList(is_incomplete=True, items=[])
        answer, doc = found
        # replace the word being typed so clients that filter by it (eglot) keep the item
        word = _word_before(answer.cursor.line_prefix)
        start = types.Position(line=params.position.line,
                               character=params.position.character - doc.position_codec.client_num_units(word))
        uri = params.text_document.uri
        items = []
        for i, item in enumerate(answer.items):
            new_text = word + item.text
            items.append(types.CompletionItem(
                label=new_text.split("\n", 1)[0] or new_text.strip() or new_text,
                kind=types.CompletionItemKind.Text,
                detail="spectab",
                sort_text=f"{i:02d}",  # greedy first, alternatives in their order
                filter_text=new_text,
                insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=types.Range(start=start, end=params.position), new_text=new_text),
                data=item_data(item, i),
                command=types.Command(title="spectab: accepted", command=ACCEPTED_COMMAND,
                                      arguments=[{"uri": uri, "chars": len(item.text), **item_data(item, i)}]),
            ))
        return types.CompletionList(is_incomplete=True, items=items)

    @server.command(ACCEPTED_COMMAND)
    def accepted(ls: SpectabServer, *args) -> None:
        # counted here, never sent anywhere; {"partial": true}: a word or a line of it was taken
        arg = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) and args[0] else args
        first = arg[0] if arg else None
        if _field(first, "partial") is True:
            ls.service.stats.partial_accepts += 1
        else:
            ls.service.stats.accepted += 1

    @server.feature(STATUS_METHOD)
    def status(ls: SpectabServer, params: Any) -> dict:
        # {"uri": ...} or {"textDocument": {"uri": ...}}: that document's lane too
        doc = _field(params, "textDocument")
        uri = _field(params, "uri") or _field(doc, "uri")
        return ls.status(uri if isinstance(uri, str) else None)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: SpectabServer, params: Any) -> None:
        ls.shutdown_requested = True
        ls.service.shutdown()
        ls.host.close()

    @server.feature(types.EXIT)
    def exit_now(ls: SpectabServer, params: Any) -> None:
        # leave without interpreter teardown: a model still loading in its thread (inside torch)
        # can abort a normal exit
        logging.shutdown()
        os._exit(0 if ls.shutdown_requested else 1)

    return server


def item_data(item, index: int) -> dict:
    """What a client may want to know of a suggestion: how sure the target was, which candidate."""
    return {"confidence": item.confidence, "candidate": index}


def workspace_root(params: types.InitializeParams) -> str | None:
    """The first workspace folder (or the root URI) as a path, for relative chunk headers."""
    uri = None
    if params.workspace_folders:
        uri = params.workspace_folders[0].uri
    elif params.root_uri:
        uri = params.root_uri
    if uri:
        from urllib.parse import unquote, urlparse

        parsed = urlparse(uri)
        return unquote(parsed.path) if parsed.scheme == "file" else None
    return params.root_path or None


def _field(params: Any, name: str) -> Any:
    """A field of a custom request's params, which pygls hands over as a dict or an object."""
    if params is None:
        return None
    if isinstance(params, dict):
        return params.get(name)
    return getattr(params, name, None)


def _word_before(line_prefix: str) -> str:
    i = len(line_prefix)
    while i > 0 and (line_prefix[i - 1].isalnum() or line_prefix[i - 1] == "_"):
        i -= 1
    return line_prefix[i:]
