"""The search page: `zoo web INDEX` serves a page where archivists query an index by example.

zoo/web/app.py is the HTTP app (Starlette, served by uvicorn; `pip install -e .[web]`) over the
same library calls the command line uses (`zoo.index.Index`, `zoo.locating.locate`);
zoo/web/static/ is the page itself, plain HTML, CSS and JavaScript with no build step.
"""
