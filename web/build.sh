#!/usr/bin/env bash
# Rebuild mesa/_web_static/app.js (committed, so `pip install` needs no Node) from
# web/src with the npm packages pinned in web/package.json. Needs node and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
npm install --no-audit --no-fund --silent
npx esbuild src/main.js --bundle --minify --format=iife --target=es2020 \
    --legal-comments=eof --outfile=../mesa/_web_static/app.js
