#!/usr/bin/env bash
# Placeholder until the tokenizer tests land: nothing to install yet.
exit 0
