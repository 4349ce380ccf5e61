"""A wrapper around Krita's Document and Node: the controller's ``Canvas``.

Pixels in, layers out: reading the source, the [Preview] layer, the result
layer. Only this module and the docker import ``krita``; GUI thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

from krita import Document, Krita, Node

from .bridge_package import SETTINGS_KEY, Rect, ResultSettings, annotation_with
from .pixels import PixelFormat, UnsupportedFormat, pixel_format, to_rgba8
from .qt import QByteArray
from .settings import Source
from .sources import Capture, CaptureError, check_node_type, plan_rect, region_mask

PREVIEW_NAME = "[Preview]"


@dataclass(frozen=True)
class Target:
    """Where a job's results go: above ``anchor`` (the source layer, or the active one) in ``document``."""

    document: Document
    anchor: Node
    color_space: tuple[str, str, str]  # the source's model, depth and profile: results are written in it
    replaces: bool = False  # the result stands for the anchor layer itself (not for the visible canvas)


@dataclass
class _Preview:
    document: Document
    node: Node
    anchor: Node
    rect: Rect


class KritaCanvas:
    def __init__(self, app: Krita | None = None) -> None:
        self._app = app or Krita.instance()
        self._previews: list[_Preview] = []
        self._results: list[tuple[Node, Node]] = []  # (source layer, result layer): a new result goes above them

    def active_document(self) -> Document | None:
        return self._app.activeDocument()

    def is_open(self, document: object) -> bool:
        return any(d == document for d in self._app.documents())

    def capture(self, source: Source, from_canvas: bool, document: object | None = None) -> Capture:
        """Read the source. Without ``document`` (a one-shot job) it first waits for Krita to finish painting."""
        doc = document if isinstance(document, Document) else self._app.activeDocument()
        if doc is None:
            raise CaptureError("open an image first")
        if document is None:
            doc.waitForDone()
        node = self._source_node(doc)
        if node is None:
            raise CaptureError("select a layer first")
        check_node_type(node.type(), from_canvas)
        holder: Document | Node = doc if from_canvas else node
        color_space = (holder.colorModel(), holder.colorDepth(), holder.colorProfile())
        try:
            fmt = pixel_format(*color_space)
        except UnsupportedFormat as exc:
            raise CaptureError(exc.message) from None
        canvas = Rect(0, 0, doc.width(), doc.height())
        content = canvas if from_canvas else _rect(node.bounds())
        selection = doc.selection() if source is not Source.LAYER else None
        selection_rect = None if selection is None else Rect(selection.x(), selection.y(), selection.width(), selection.height())
        rect = plan_rect(source, canvas, content, selection_rect)
        selected = None if selection is None else bytes(selection.pixelData(rect.x, rect.y, rect.width, rect.height))
        mask = region_mask(source, selected)
        pixels = bytes(holder.pixelData(rect.x, rect.y, rect.width, rect.height))
        if len(pixels) != rect.width * rect.height * fmt.pixel_bytes:
            raise CaptureError(f"Krita returned {len(pixels)} bytes for a {rect.width}x{rect.height} {fmt.describe()} region")
        return Capture(rect, pixels, fmt, mask, target=Target(doc, node, color_space, replaces=not from_canvas))

    def show_preview(self, target: object, rect: Rect, pixels: bytes) -> None:
        assert isinstance(target, Target)
        preview = self._live_preview(target)
        if preview is None:
            # filled before it is added: the add is the only undo entry previews ever make
            node = self._new_layer(target, PREVIEW_NAME, rect, pixels)
            self._insert_above(target, node, self._topmost_result(target))  # a new result shows above earlier ones
            self._previews.append(_Preview(target.document, node, target.anchor, rect))
        else:
            self._overwrite(preview, rect, pixels)
        target.document.refreshProjection()

    def clear_preview(self, target: object) -> None:
        assert isinstance(target, Target)
        preview = self._find_preview(target.document)
        if preview is None:
            return
        self._previews.remove(preview)
        if preview.node.parentNode() is not None:
            preview.node.remove()
            target.document.refreshProjection()

    def apply_result(
        self, target: object, name: str, rect: Rect, pixels: bytes, *, from_preview: bool, settings: ResultSettings | None = None
    ) -> None:
        assert isinstance(target, Target)
        if target.replaces and not _opaque(pixels, target.color_space):
            node = self._replace_source(target, name, rect, pixels)
        else:
            preview = self._live_preview(target) if from_preview else None
            if preview is not None:
                # the [Preview] layer becomes the result: its add is the one undo step of the whole job
                self._overwrite(preview, rect, pixels)
                preview.node.setName(name)
                self._previews.remove(preview)
                node = preview.node
            else:
                node = self._new_layer(target, name, rect, pixels)
                self._insert_above(target, node, self._topmost_result(target))
            self._results.append((target.anchor, node))
            target.document.refreshProjection()
        if settings is not None:
            # saved with the document; annotations are not part of the undo history
            document = target.document
            table = annotation_with(bytes(document.annotation(SETTINGS_KEY)), node.uniqueId().toString(), settings)
            document.setAnnotation(SETTINGS_KEY, "img2img-bridge: the settings of each result layer", QByteArray(table))

    # --- internals ------------------------------------------------------------------------

    def _replace_source(self, target: Target, name: str, rect: Rect, pixels: bytes) -> Node:
        """A copy of the source layer (its masks, opacity and mode kept) with the result in, and the source hidden.

        A result with see-through pixels stacked over its still visible source would
        add its alpha to the source's; this way the canvas shows the source replaced.
        """
        self.clear_preview(target)
        node = target.anchor.duplicate()
        node.setName(name)
        node.setVisible(True)  # the source may be hidden by an earlier result
        node.setPixelData(QByteArray(pixels), *_args(rect))
        self._insert_above(target, node, self._topmost_result(target))
        for _, earlier in self._results_of(target):
            earlier.setVisible(False)
        self._results.append((target.anchor, node))
        target.anchor.setVisible(False)
        target.document.refreshProjection()
        return node

    def _source_node(self, doc: Document) -> Node | None:
        node = doc.activeNode()
        preview = self._find_preview(doc)
        if node is not None and preview is not None and preview.node == node:
            return preview.anchor  # never read our own preview: Krita may have made it the active layer
        return node

    def _find_preview(self, document: Document) -> _Preview | None:
        return next((p for p in self._previews if p.document == document), None)

    def _live_preview(self, target: Target) -> _Preview | None:
        """The document's [Preview] layer if it is still in place above ``target``'s layer; else None (and gone)."""
        preview = self._find_preview(target.document)
        if preview is None:
            return None
        if preview.node.parentNode() is not None and preview.anchor == target.anchor:
            return preview
        self.clear_preview(target)  # removed by the user or by undo, or it belongs to another layer
        return None

    def _overwrite(self, preview: _Preview, rect: Rect, pixels: bytes) -> None:
        if preview.rect != rect:
            old = preview.rect
            size = old.width * old.height * _pixel_bytes(preview.node)
            preview.node.setPixelData(QByteArray(bytes(size)), *_args(old))
            preview.rect = rect
        preview.node.setPixelData(QByteArray(pixels), *_args(rect))

    def _new_layer(self, target: Target, name: str, rect: Rect, pixels: bytes) -> Node:
        node = target.document.createNode(name, "paintlayer")
        if (node.colorModel(), node.colorDepth(), node.colorProfile()) != target.color_space:
            node.setColorSpace(*target.color_space)
        node.setPixelData(QByteArray(pixels), *_args(rect))
        return node

    def _results_of(self, target: Target) -> list[tuple[Node, Node]]:
        """Earlier results of ``target``'s layer that still lie beside it, forgetting those that do not."""
        parent = target.anchor.parentNode()
        self._results = [(a, r) for a, r in self._results if r.parentNode() is not None]
        return [(a, r) for a, r in self._results if a == target.anchor and parent is not None and r.parentNode() == parent]

    def _topmost_result(self, target: Target) -> Node | None:
        mine = [result for _, result in self._results_of(target)]
        parent = target.anchor.parentNode()
        if not mine or parent is None:
            return None
        order = parent.childNodes()  # bottom to top
        return max(mine, key=lambda node: next((i for i, child in enumerate(order) if child == node), -1))

    def _insert_above(self, target: Target, node: Node, above: Node | None = None) -> None:
        parent = target.anchor.parentNode()
        if parent is None:  # the source layer was deleted meanwhile
            target.document.rootNode().addChildNode(node, None)
        else:
            parent.addChildNode(node, above or target.anchor)


def _rect(qrect: object) -> Rect:
    return Rect(qrect.x(), qrect.y(), qrect.width(), qrect.height())  # type: ignore[attr-defined]


def _args(rect: Rect) -> tuple[int, int, int, int]:
    return rect.x, rect.y, rect.width, rect.height


def _opaque(pixels: bytes, color_space: tuple[str, str, str]) -> bool:
    return to_rgba8(pixels, pixel_format(*color_space))[3::4].count(255) * pixel_format(*color_space).pixel_bytes == len(pixels)


def _pixel_bytes(node: Node) -> int:
    return PixelFormat(pixel_format(node.colorModel(), node.colorDepth()).depth).pixel_bytes
