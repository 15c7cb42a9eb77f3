"""Rendering: formats a Session as text (console, markdown, html, json, trace). Never measures."""
