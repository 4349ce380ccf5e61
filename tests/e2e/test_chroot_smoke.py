"""Smoke tests: real GIMP and Krita run headless in the e2e chroots, and are the versions the matrix names."""

from __future__ import annotations

import http.server
import json
import struct
import textwrap
import threading
import zlib
from pathlib import Path

import chroot
import pytest

# --------------------------------------------------------------------------
# stdlib PNG reader (8/16-bit RGB/RGBA, non-interlaced): exact 16-bit values


def read_png(path: Path) -> tuple[int, int, int, int, list[tuple[int, ...]]]:
    """Return (width, height, bit_depth, channels, pixels row-major)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = depth = ctype = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    assert ctype in (2, 6) and depth in (8, 16) and interlace == 0, (ctype, depth)
    channels = 4 if ctype == 6 else 3
    bpp = channels * depth // 8
    stride = width * bpp
    raw = zlib.decompress(idat)
    prev = bytearray(stride)
    pixels: list[tuple[int, ...]] = []
    fmt = f">{width * channels}{'H' if depth == 16 else 'B'}"
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        values = struct.unpack(fmt, bytes(line))
        pixels += [values[x * channels : (x + 1) * channels] for x in range(width)]
        prev = line
    return width, height, depth, channels, pixels


# --------------------------------------------------------------------------
# GIMP

GIMP_W, GIMP_H = 16, 8


def _gimp_pattern() -> list[tuple[int, int, int, int]]:
    return [((x * 16) % 256, (y * 32) % 256, (x * y * 7 + 3) % 256, 128 + (x + y) % 128) for y in range(GIMP_H) for x in range(GIMP_W)]


GIMP_SCRIPT = """
import json, sys
res = {"python": sys.version.split()[0], "scope": sorted(k for k in globals() if k[:1] != "_")}
W, H = %(w)d, %(h)d
image = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(image, "e2e", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0,
                       Gimp.LayerMode.NORMAL)
image.insert_layer(layer, None, 0)
rect = Gegl.Rectangle.new(0, 0, W, H)
data = bytes(%(data)r)
buf = layer.get_buffer()
buf.set(rect, "R'G'B'A u8", data)
buf.flush()
back = buf.get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP)
res["roundtrip"] = bytes(back) == data
res["layers"] = len(image.get_layers())
layer.update(0, 0, W, H)
res["saved"] = Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image,
                              Gio.File.new_for_path(%(png)r), None)
import gi
gi.require_version("Gimp", "3.0")
from gi.repository import Gimp as Gimp2
res["gi_gimp_version"] = Gimp2.version()
image.delete()
with open(%(out)r, "w") as fh:
    json.dump(res, fh)
"""


@pytest.mark.editor("gimp")
def test_the_installed_gimp_is_the_expected_version(chroot_root: Path, editor: chroot.Editor) -> None:
    found = chroot.installed_versions(chroot_root, ["gimp"])["gimp"]
    assert editor.matches(found), f"{editor.variant.name} chroot holds GIMP {found}, not {editor.version}"


@pytest.mark.editor("krita")
def test_the_installed_krita_is_the_expected_version(chroot_root: Path, editor: chroot.Editor) -> None:
    found = chroot.installed_versions(chroot_root, ["krita"])["krita"]
    assert editor.matches(found), f"{editor.variant.name} chroot holds Krita {found}, not {editor.version}"


@pytest.mark.editor("gimp")
def test_gimp_batch_pixels_and_png(chroot_root: Path, chroot_home: str, editor: chroot.Editor) -> None:
    pattern = _gimp_pattern()
    png, out, script = (f"{chroot_home}/{n}" for n in ("out.png", "result.json", "s.py"))
    chroot.host_path(chroot_root, script).write_text(
        GIMP_SCRIPT
        % {
            "w": GIMP_W,
            "h": GIMP_H,
            "data": bytes(v for px in pattern for v in px),
            "png": png,
            "out": out,
        }
    )
    res = chroot.gimp_batch(chroot_root, script, home=chroot_home, timeout=180)
    assert res.returncode == 0, res.describe()
    result = json.loads(chroot.host_path(chroot_root, out).read_text())
    print("GIMP batch:", result)
    assert result["roundtrip"] is True
    assert result["saved"] is True
    assert result["layers"] == 1
    assert editor.matches(result["gi_gimp_version"]), result["gi_gimp_version"]
    assert {"Gimp", "Gegl", "GLib", "Gio", "GObject"} <= set(result["scope"])
    width, height, depth, channels, pixels = read_png(chroot.host_path(chroot_root, png))
    assert (width, height, depth, channels) == (GIMP_W, GIMP_H, 8, 4)
    assert pixels == pattern


@pytest.mark.editor("gimp")
def test_gimp_batch_failure_is_nonzero(chroot_root: Path, chroot_home: str) -> None:
    script = f"{chroot_home}/fail.py"
    chroot.host_path(chroot_root, script).write_text("raise RuntimeError('e2e-boom')\n")
    res = chroot.gimp_batch(chroot_root, script, home=chroot_home, timeout=180)
    assert res.returncode != 0, res.describe()
    assert "e2e-boom" in res.stdout + res.stderr
    assert script in res.stdout + res.stderr  # traceback names the file


GIMP_PLUGIN = """#!/usr/bin/env python3
import json, sys, threading
import gi
gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, GLib, GObject


class E2EProbe(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return ["e2e-probe"]

    def do_create_procedure(self, name):
        proc = Gimp.Procedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        proc.add_string_argument("out", "Out", "result path", "", GObject.ParamFlags.READWRITE)
        return proc

    def run(self, procedure, config, data):
        res = {"python": sys.version.split()[0], "executable": sys.executable}
        loop = GLib.MainLoop()
        ticks = []

        def tick():
            ticks.append(1)
            if len(ticks) < 3:
                return True
            loop.quit()
            return False

        def worker():
            GLib.idle_add(lambda: res.__setitem__("idle_from_thread", True) or False)

        GLib.timeout_add(10, tick)
        threading.Thread(target=worker).start()
        GLib.timeout_add_seconds(30, lambda: loop.quit() or False)
        loop.run()
        res["ticks"] = len(ticks)
        for mod in ("websockets", "msgpack", "PIL", "numpy"):
            try:
                __import__(mod)
                res["has_" + mod] = True
            except ImportError:
                res["has_" + mod] = False
        with open(config.get_property("out"), "w") as fh:
            json.dump(res, fh)
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


Gimp.main(E2EProbe.__gtype__, sys.argv)
"""

GIMP_CALL = """
proc = Gimp.get_pdb().lookup_procedure("e2e-probe")
assert proc is not None, "plug-in e2e-probe not registered"
config = proc.create_config()
config.set_property("out", %(out)r)
result = proc.run(config)
assert result.index(0) == Gimp.PDBStatusType.SUCCESS, result.index(0)
"""


@pytest.mark.editor("gimp")
def test_gimp_python_plugin(chroot_root: Path, chroot_home: str, tmp_path: Path) -> None:
    src = tmp_path / "e2e-probe.py"
    src.write_text(GIMP_PLUGIN)
    chroot.install_gimp_plugin(chroot_root, home=chroot_home, name="e2e-probe", source=src)
    out, script = f"{chroot_home}/probe.json", f"{chroot_home}/call.py"
    chroot.host_path(chroot_root, script).write_text(GIMP_CALL % {"out": out})
    res = chroot.gimp_batch(chroot_root, script, home=chroot_home, timeout=180)
    assert res.returncode == 0, res.describe()
    result = json.loads(chroot.host_path(chroot_root, out).read_text())
    print("GIMP plug-in:", result)
    assert result["ticks"] == 3  # GLib main loop runs inside a plug-in
    assert result["idle_from_thread"] is True
    assert result["has_websockets"] is False
    assert result["has_msgpack"] is False


# --------------------------------------------------------------------------
# Krita

KRITA_EXTENSION = """
import importlib, json, os, struct, sys, traceback

from krita import Extension, InfoObject, Krita

QT = "PyQt6" if "PyQt6" in sys.modules else "PyQt5"
QtCore = importlib.import_module(QT + ".QtCore")
QByteArray, QTimer = QtCore.QByteArray, QtCore.QTimer

RESULT = os.environ.get("E2E_RESULT")
OUTDIR = os.environ.get("E2E_OUTDIR", "/tmp")


def _pixels(doc, fmt, px, n):
    node = doc.activeNode() or doc.topLevelNodes()[0]
    data = struct.pack(fmt, *px) * n
    w = h = int(n ** 0.5)
    node.setPixelData(QByteArray(data), 0, 0, w, h)
    back = bytes(node.pixelData(0, 0, w, h))
    return node, {
        "roundtrip": back == data,
        "first": list(struct.unpack(fmt, back[: struct.calcsize(fmt)])),
        "channels": [c.name() for c in node.channels()],
        "color": [node.colorModel(), node.colorDepth(), node.colorProfile()],
    }


def _export(doc, path):
    doc.setBatchmode(True)
    doc.refreshProjection()
    doc.waitForDone()
    return doc.exportImage(path, InfoObject())


class E2EProbe(Extension):
    def setup(self):
        if not RESULT:
            return
        Krita.instance().notifier().windowCreated.connect(self.on_window)

    def createActions(self, window):
        pass

    def on_window(self):
        QTimer.singleShot(0, self.deliberate_error)
        QTimer.singleShot(0, self.scenario)

    def deliberate_error(self):
        # uncaught: must end up in chroot.krita_python_errors(), not a dialog
        raise ValueError("e2e-deliberate-error")

    def scenario(self):
        app = Krita.instance()
        res = {"python": sys.version.split()[0], "krita": app.version(),
               "qt": QtCore.QT_VERSION_STR, "pyqt": QtCore.PYQT_VERSION_STR}
        for mod in ("websockets", "msgpack", QT + ".QtWebSockets", QT + ".QtNetwork"):
            try:
                __import__(mod)
                res["has_" + mod] = True
            except ImportError:
                res["has_" + mod] = False
        docs = []
        try:
            doc = app.createDocument(64, 64, "t", "RGBA", "U8", "", 72.0)
            docs.append(doc)
            window = app.activeWindow()
            res["window"] = window is not None
            if window is not None:
                window.addView(doc)
            node, res["u8"] = _pixels(doc, "<4B", (10, 20, 30, 255), 64 * 64)
            res["u8"]["export"] = _export(doc, OUTDIR + "/u8.png")
            for key, profile in (("u16", ""), ("u16_srgb", "sRGB-elle-V2-srgbtrc.icc")):
                d = app.createDocument(8, 8, key, "RGBA", "U16", profile, 72.0)
                docs.append(d)
                _, res[key] = _pixels(d, "<4H", (1000, 2000, 3000, 65535), 64)
                res[key]["export"] = _export(d, OUTDIR + "/" + key + ".png")
        except Exception:
            res["error"] = traceback.format_exc()
        for d in docs:
            if hasattr(d, "setModified"):
                d.setModified(False)  # no "save changes?" dialog on quit
        with open(RESULT + ".part", "w") as fh:
            json.dump(res, fh)
        os.replace(RESULT + ".part", RESULT)
        app.action("file_quit").trigger()


Krita.instance().addExtension(E2EProbe(Krita.instance()))
"""


@pytest.mark.editor("krita")
def test_krita_pixel_order(chroot_root: Path, chroot_home: str, tmp_path: Path, editor: chroot.Editor) -> None:
    pkg = tmp_path / "e2eprobe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(KRITA_EXTENSION))
    chroot.install_pykrita_plugin(chroot_root, home=chroot_home, name="e2eprobe", package=pkg)
    out = f"{chroot_home}/result.json"
    res = chroot.krita_gui(
        chroot_root,
        home=chroot_home,
        env={"E2E_RESULT": out, "E2E_OUTDIR": chroot_home},
        timeout=240,
        done_file=out,
    )
    result_file = chroot.host_path(chroot_root, out)
    assert result_file.exists(), "no result from the Krita extension\n" + res.describe()
    result = json.loads(result_file.read_text())
    print("Krita:", json.dumps(result, indent=1))
    assert "error" not in result, result["error"]
    assert not res.timed_out, "Krita did not quit after file_quit\n" + res.describe()
    errors = chroot.krita_python_errors(chroot_root, chroot_home)
    assert "e2e-deliberate-error" in errors, res.describe()
    assert errors.count("Traceback") == 1, errors
    assert editor.matches(result["krita"]), result["krita"]
    assert result["pyqt"].split(".")[0] == result["qt"].split(".")[0] == ("6" if editor.major >= 6 else "5"), result
    assert result["has_websockets"] is False
    assert result["has_msgpack"] is False

    # 8-bit: pixelData is B,G,R,A; the exported PNG (R,G,B,A) proves it.
    u8 = result["u8"]
    assert u8["roundtrip"] is True
    assert u8["channels"] == ["Blue", "Green", "Red", "Alpha"]
    assert u8["color"][:2] == ["RGBA", "U8"]
    assert u8["export"] is True
    w, h, depth, _, pixels = read_png(chroot.host_path(chroot_root, f"{chroot_home}/u8.png"))
    assert (w, h, depth) == (64, 64, 8)
    assert set(pixels) == {(30, 20, 10, 255)}

    # 16-bit: little-endian uint16 B,G,R,A.
    for key in ("u16", "u16_srgb"):
        info = result[key]
        assert info["roundtrip"] is True
        assert info["first"] == [1000, 2000, 3000, 65535]
        assert info["channels"] == ["Blue", "Green", "Red", "Alpha"]
        assert info["color"][:2] == ["RGBA", "U16"]
        assert info["export"] is True
    # Default U16 profile is linear (g10): export converts, order still R>G>B.
    assert result["u16"]["color"][2] == "sRGB-elle-V2-g10.icc"
    _, _, depth, _, pixels = read_png(chroot.host_path(chroot_root, f"{chroot_home}/u16.png"))
    assert depth == 16
    r, g, b, a = pixels[0]
    assert r > g > b and a == 65535, pixels[0]
    # With an sRGB-TRC profile the 16-bit values survive export unchanged.
    _, _, depth, _, pixels = read_png(chroot.host_path(chroot_root, f"{chroot_home}/u16_srgb.png"))
    assert depth == 16
    assert set(pixels) == {(3000, 2000, 1000, 65535)}


# --------------------------------------------------------------------------
# networking


def test_chroot_reaches_host_loopback(chroot_root: Path, chroot_home: str) -> None:
    """The chroot shares the host's network namespace: 127.0.0.1 is the host."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello-from-host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = server.server_address[1]
            code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=10).read().decode())"
            res = chroot.run_in_chroot(chroot_root, ["python3", "-c", code], home=chroot_home, timeout=30)
        finally:
            server.shutdown()
        thread.join()
    assert res.returncode == 0, res.describe()
    assert res.stdout.strip() == "hello-from-host"
