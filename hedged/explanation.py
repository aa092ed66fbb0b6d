"""``Explanation``: the heat maps behind a hedged answer, and their picture.

:meth:`hedged.HedgedClassifier.explain` fills one; :meth:`Explanation.save`
draws it as a 2 x 2 PNG with the photo's aspect ratio: the photo, the map of the
explained node, and the maps of the two most probable children under it (what the
model could not decide between). For a leaf, which has no children, the two
most probable *other* leaves are shown instead (what the model ruled out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hedged.results import Node, Prediction

METHODS = ("gradcam", "integrated_gradients")
#: What the panels after the first map show: children of the node, or for a leaf other leaves.
ROLES = ("node", "child", "alternative")
# Longer side of one panel of the PNG, in pixels.
_PANEL = 420


def check_method(method) -> str:
    aliases = {"ig": "integrated_gradients", "grad-cam": "gradcam", "integrated-gradients": "integrated_gradients"}
    method = aliases.get(method, method)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (or 'ig'), got {method!r}")
    return method


@dataclass(frozen=True, eq=False)
class Explanation:
    """Attribution maps of a node and of what competes under it, for one photo.

    Attributes
    ----------
    source : str or None
        The image's path, when it was given as one.
    image : np.ndarray
        ``(H, W, 3)`` uint8, the photo as the model loaded it (upright), scaled so
        that its longer side is at most ``max_side``.
    method : {"gradcam", "integrated_gradients"}
    nodes : tuple of Node
        ``nodes[0]`` is the explained node, the rest what ``roles`` says.
    roles : tuple of str
        ``"node"``, then ``"child"`` (the most probable children of the node) or,
        for a leaf, ``"alternative"`` (the most probable other leaves).
    probabilities : np.ndarray
        ``(K,)`` posterior of each node (sum of its leaves', with the answer's TTA).
    maps : np.ndarray
        ``(K, H, W)`` float32 heat maps on ``image``'s pixels; NaN where the model
        saw nothing (outside a centre crop). Grad-CAM: non-negative; integrated
        gradients: attributions summed over colour channels (signed).
    prediction : Prediction
        The hedged answer for the photo at the requested accuracy.
    angles : tuple of float
        The TTA rotations the maps were averaged over.
    note : str or None
        Set when the maps come from another bundle than the one answering (the
        torch source of an ONNX bundle).
    """

    source: str | None
    image: np.ndarray
    method: str
    nodes: tuple[Node, ...]
    roles: tuple[str, ...]
    probabilities: np.ndarray
    maps: np.ndarray
    prediction: Prediction
    angles: tuple[float, ...]
    note: str | None = field(default=None)

    @property
    def node(self) -> Node | None:
        """The explained node (the answer's, or one asked for); ``None`` when nothing is explained
        (a photo judged outside the taxonomy) or for a "not sure" answer (its children are)."""
        return self.nodes[0] if self.nodes and self.roles[0] == "node" else None

    def to_dict(self) -> dict:
        """JSON-friendly summary (no arrays)."""
        return {
            "image": self.source,
            "method": self.method,
            "nodes": [n.name for n in self.nodes],
            "names": [n.display_name for n in self.nodes],
            "roles": list(self.roles),
            "probabilities": [float(p) for p in self.probabilities],
            "tta_angles": list(self.angles),
            **({"note": self.note} if self.note else {}),
        }

    # ------------------------------------------------------------------ picture
    def figure(self):
        """A matplotlib ``Figure`` (Agg canvas, no pyplot state): 2 x 2 panels with the photo's aspect ratio."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        h, w = self.image.shape[:2]
        scale = _PANEL / max(h, w)
        pw, ph = w * scale, h * scale
        dpi = 100
        fig = Figure(figsize=(2 * pw / dpi, 2 * ph / dpi), dpi=dpi, facecolor="white")
        FigureCanvasAgg(fig)
        # The same margin fraction on both axes keeps each panel, and the sheet, in the photo's ratio.
        gap = 0.006
        size = 0.5 - 2 * gap
        font = float(np.clip(min(pw, ph) / 26.0, 6.0, 11.0))
        panels = [(None, self._photo_title())] + [
            (self.maps[k], self._title(k)) for k in range(len(self.nodes))
        ]
        for i in range(4):
            row, col = divmod(i, 2)
            ax = fig.add_axes((col * 0.5 + gap, (1 - row) * 0.5 + gap, size, size))
            ax.set_axis_off()
            if i >= len(panels):
                empty = "(nothing to explain)" if not self.nodes else "(no other child)"
                ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center",
                        fontsize=font, color="0.4")
                continue
            heat, title = panels[i]
            self._draw(ax, heat)
            ax.text(0.015, 0.985, title, transform=ax.transAxes, ha="left", va="top", fontsize=font,
                    color="white", wrap=True, bbox=dict(facecolor="black", alpha=0.65, pad=2.5, edgecolor="none"))
        return fig

    def save(self, path) -> None:
        """Write the figure as a PNG."""
        self.figure().savefig(path, format="png", dpi=100, facecolor="white")

    def heatmap_rgba(self, k: int) -> np.ndarray:
        """The overlay of ``maps[k]`` as drawn on the photo in :meth:`figure`, as pixels.

        Returns ``(H, W, 4)`` uint8 on ``image``'s pixels: jet colours, opacity
        following the heat, fully transparent where the model saw nothing (NaN).
        The HTTP API sends these, so that its overlays and the PNG cannot differ.
        """
        return np.round(255 * _overlay(self.maps[k], self.method)).astype(np.uint8)

    def _photo_title(self) -> str:
        p = self.prediction
        name = "photo" if self.source is None else _basename(self.source)
        if p.kind == "answer":
            return f"{name}\nanswer: {p.headline} {_pct(p.probability)}"
        # not sure / not clothing: never "Clothing 100%"; say what the model would guess
        return f"{name}\nanswer: {p.headline}\nleaf guess: {p.leaf.display_name} {_pct(p.leaf_probability)}"

    def _title(self, k: int) -> str:
        node, p = self.nodes[k], self.probabilities[k]
        what = {"node": "explained", "child": "child", "alternative": "ruled out"}[self.roles[k]]
        method = "Grad-CAM" if self.method == "gradcam" else "IG"
        return f"{node.display_name} {_pct(p)}\n{what} ({method})"

    def _draw(self, ax, heat) -> None:
        ax.imshow(self.image, aspect="auto", interpolation="bilinear")
        if heat is None:
            return
        ax.imshow(_overlay(heat, self.method), aspect="auto", interpolation="bilinear")
        seen = np.isfinite(heat)
        if not seen.all() and seen.any():
            # Outline what the model saw (a centre crop of the photo).
            rows, cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
            from matplotlib.patches import Rectangle

            ax.add_patch(Rectangle((cols[0] - 0.5, rows[0] - 0.5), cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1,
                                   fill=False, edgecolor="white", linestyle="--", linewidth=1.0))


def _overlay(heat: np.ndarray, method: str) -> np.ndarray:
    """``(H, W, 4)`` float RGBA in [0, 1] to lay over the photo."""
    from matplotlib import colormaps

    shown = _display_scale(heat, method)
    rgba = colormaps["jet"](np.nan_to_num(shown))
    # Opacity follows the heat, so that cold regions keep the photo readable; NaN (unseen) is clear.
    rgba[..., 3] = np.where(np.isfinite(shown), 0.2 + 0.45 * np.nan_to_num(shown), 0.0)
    return rgba


def _display_scale(heat: np.ndarray, method: str) -> np.ndarray:
    """Map values to [0, 1] for colouring: each panel by its own maximum (Grad-CAM) or
    99th percentile of the positive evidence (integrated gradients, which is spiky)."""
    pos = np.where(np.isfinite(heat), np.maximum(heat, 0.0), np.nan)
    finite = pos[np.isfinite(pos)]
    if finite.size == 0:
        return pos
    top = float(finite.max()) if method == "gradcam" else float(np.percentile(finite, 99))
    # No positive evidence anywhere: the floor opacity where seen; unseen pixels stay NaN (clear) either way.
    return pos / top if top > 0 else np.where(np.isfinite(pos), 0.0, np.nan)


def _pct(p: float) -> str:
    p = 100 * float(p)
    return f"{p:.1f}%" if p >= 0.1 or p == 0 else f"{p:.2g}%"


def _basename(source: str) -> str:
    import os

    return os.path.basename(source) or source
