"""The site agent: one process per site, between the federation and the site's Ray cluster."""
