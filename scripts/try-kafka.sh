#!/usr/bin/env bash
# Try sluice's Kafka source without Docker: the test suite's Kafka-protocol broker
# (tansu, built once by scripts/services.sh, about 15 minutes, then cached) on
# 127.0.0.1:9092 (KAFKA_ADDR to change it), with the topics named on the command
# line (default: orders), three partitions each. The broker does not create topics
# on first use. Records live in memory until it stops: Ctrl-C stops it.
#
#   ./scripts/try-kafka.sh [TOPIC...]
#
# `produce TOPIC` sends each line of standard input as one record, with
# kafka-python (installed once from PyPI into the tools cache):
#
#   echo '{"order_id": "o-1"}' | ./scripts/try-kafka.sh produce orders
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
addr="${KAFKA_ADDR:-127.0.0.1:9092}"

if [ "${1:-}" = produce ]; then
  topic="${2:?usage: try-kafka.sh produce TOPIC < lines}"
  venv="$TOOLS/kafka-python"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import kafka' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet kafka-python
  fi
  # The program comes as an argument: standard input carries the records.
  exec "$venv/bin/python" -c "$(cat <<'PY'
import sys
from kafka import KafkaProducer
addr, topic = sys.argv[1], sys.argv[2]
producer = KafkaProducer(bootstrap_servers=addr)
n = 0
for line in open(0, "rb"):
    line = line.rstrip(b"\n")
    if line:
        producer.send(topic, line)
        n += 1
producer.flush()
print(f"produced {n} records to {topic}", file=sys.stderr)
PY
)" "$addr" "$topic"
fi
install_tansu
start tansu-try "$addr" "$TANSU" broker \
  --listener-url "tcp://$addr" \
  --advertised-listener-url "tcp://$addr" \
  --storage-engine memory://tansu/
topics=("$@")
[ ${#topics[@]} -gt 0 ] || topics=(orders)
for topic in "${topics[@]}"; do
  "$TANSU" topic create "$topic" --partitions 3 --broker "tcp://$addr" >/dev/null
  echo "==> topic $topic (3 partitions) on $addr"
done
echo "==> Kafka broker ready on $addr; Ctrl-C stops it"
wait
