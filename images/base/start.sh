#!/bin/sh
# The image's command, as in pipecat-base: the optional pre-app hook, then the runtime
# serving /app/bot.py on $PORT (8080).
set -e
if [ -f /app/pre-app.sh ]; then
  sh /app/pre-app.sh
fi
exec cattery runtime /app
