"""Services: a request queue per service, a response queue per caller, ids correlate."""
