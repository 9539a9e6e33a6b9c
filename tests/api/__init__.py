"""Tests of the JSON API, through real HTTP requests to the Django test client."""
