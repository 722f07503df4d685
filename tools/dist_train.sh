#!/usr/bin/env bash
# DDP training on one machine: tools/dist_train.sh CONFIG NGPUS [tools/train.py options ...]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on each (torchrun's static rendezvous).
set -euo pipefail
CONFIG=${1:?usage: tools/dist_train.sh CONFIG NGPUS [args]}
NGPUS=${2:?usage: tools/dist_train.sh CONFIG NGPUS [args]}
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
exec "$PY" -m torch.distributed.run \
    --nnodes="$NNODES" --node-rank="$NODE_RANK" --master-addr="$MASTER_ADDR" --master-port="$PORT" \
    --nproc-per-node="$NGPUS" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
