"""``qat serve``'s process: gevent patches the standard library first, then the usual CLI runs.

gevent's server (:mod:`service.server.wsgi`) needs sockets, ssl, locks and ``time.sleep``
that yield to other connections, and patching works only before anything imports
them, so ``qat serve`` restarts itself as ``python -m service.server.main serve ...``.
Importing this module does nothing.
"""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

    from workers.cli import main

    main()
