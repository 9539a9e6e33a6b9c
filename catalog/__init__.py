"""Provider endpoints that admins register: where hosted calls go and which worker secret they
carry. Users refer to an endpoint by name; they never name a URL or a variable."""
