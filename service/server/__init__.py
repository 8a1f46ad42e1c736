"""The HTTP server process: gevent's WSGI server with our limits, and its thread pool.

Kept apart from :mod:`service.api` because :mod:`service.server.main` must patch the
standard library before anything imports sockets or threads.
"""
