"""The draw-a-digit web page: static files mounted into the BentoML service at /ui."""

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")

ui_app = Starlette(routes=[Mount("/", StaticFiles(directory=STATIC_DIR, html=True))])
