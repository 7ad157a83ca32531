"""A minimal RTSP server for tests and benchmarks, on GStreamer's gst-rtsp-server.

Run it with a Python that sees PyGObject (Debian: ``/usr/bin/python3`` with
``python3-gi``, ``gir1.2-gst-rtsp-server-1.0`` and ``gstreamer1.0-plugins-{good,bad}``);
the analyzer's own environment does not need ``gi``::

    /usr/bin/python3 gst_rtsp_serve.py --port 8554 --file clip.mp4 [--mount /cam] [--address A]

It serves the H.264 track of an MP4 at its native frame rate
(``filesrc ! qtdemux ! h264parse ! rtph264pay``), shared between clients, and prints
``READY <port>`` on stdout once it listens. It never imports the analyzer.
"""

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", required=True, help="MP4 with an H.264 video track")
    parser.add_argument("--mount", default="/cam")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args()

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! qtdemux ! h264parse '
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr, flush=True)
        return 1
    print(f"READY {args.port}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
