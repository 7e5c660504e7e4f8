#!/usr/bin/env bash
# Set up and run hisguard on this machine with the embedded default: a local server on SQLite
# and an agent watching this machine with config.example.toml. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[server]'
export HISGUARD_DATA="$PWD/var/server"
mkdir -p var
.venv/bin/hisguard-server init >/dev/null  # the database the commands below and the server share
if [ ! -s var/agent.token ]; then
  .venv/bin/hisguard-server token create --agent demo-agent --site demo-hospital | tail -n 1 > var/agent.token
fi
if [ ! -s var/engineer.token ]; then
  .venv/bin/hisguard-server token create --engineer demo-engineer | tail -n 1 > var/engineer.token
fi
if [ ! -s var/console.password ]; then
  (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))' > var/console.password)
  .venv/bin/hisguard-server user create --name admin --role admin --password-file var/console.password >/dev/null
fi
.venv/bin/hisguard-server run --listen 127.0.0.1:8470 > var/server.log 2>&1 &
server=$!
agent=
trap 'kill $server ${agent:-} 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for _ in $(seq 50); do curl -fs http://127.0.0.1:8470/healthz >/dev/null 2>&1 && break; sleep 0.2; done
.venv/bin/hisguard-agent once -c config.example.toml || true
.venv/bin/hisguard-agent run -c config.example.toml > var/agent.log 2>&1 &
agent=$!
cat <<MSG

hisguard is running / 已启动
  console 控制台: http://127.0.0.1:8470/   user 用户 admin, password 密码 in var/console.password
  API docs 接口文档: http://127.0.0.1:8470/docs
  incidents 事件:  curl -H "Authorization: Bearer \$(cat var/engineer.token)" http://127.0.0.1:8470/api/v1/incidents
  agents 代理:     curl -H "Authorization: Bearer \$(cat var/engineer.token)" http://127.0.0.1:8470/api/v1/agents
  logs 日志:       var/server.log  var/agent.log
Ctrl-C to stop / 按 Ctrl-C 停止
MSG
wait $server
