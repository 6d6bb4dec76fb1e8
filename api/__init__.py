"""The HTTP front end: routes, request/response models, auth and error mapping."""
