"""The HTTP layer: the FastAPI app (`main`), its middleware (body limits, keys, metrics, access
log), the request checks that turn a form or JSON body into model inputs (`inputs`), the answers'
schemas, the mapping of every error to a JSON status (`errors`) and the routes, one router per
resource. The work itself is the service layer's (`fbmr.serving.service`)."""
