"""The HTTP API: the app factory, its blueprints, auth, uploads, validation, errors and OpenAPI.

Nothing here imports torch; the routes call the job, dataset and team domain modules in
:mod:`service`.
"""
