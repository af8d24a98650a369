"""The search page: `zoo web INDEX` serves a page where archivists query an index by example.

zoo/apps/web/app.py is the HTTP app (Starlette, served by uvicorn; `pip install -e .[web]`) over the
same library calls the command line uses (`zoo.apps.index.Index`, `zoo.apps.locating.locate`);
zoo/apps/web/static/ is the page itself, plain HTML, CSS and JavaScript with no build step.
"""
