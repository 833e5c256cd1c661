"""Outcome metrics: judging a rollout on whatever users report about its answers (a
thumbs-down, a complaint, a judge's score, a regression target), through a small, safe
expression language (:mod:`.expr`) and the plan's metric declarations (:mod:`.metrics`)."""
