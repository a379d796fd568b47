# The training image for GKE (`python -m experiments.sweep --launch=xpk`): Python 3.11, every dependency at the
# version requirements.lock pins (the tpu and data extras: jax[tpu], the tf.data mixture), then the code.
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPOSITORY/llama_jax:$(git rev-parse --short HEAD) .
#   docker push REGION-docker.pkg.dev/PROJECT/REPOSITORY/llama_jax:$(git rev-parse --short HEAD)
# The dependencies are one layer, rebuilt only when the lock or setup.py changes.
FROM python:3.11-slim
WORKDIR /llama_jax
COPY requirements.lock setup.py ./
RUN grep -E '^(pip|uv)==' requirements.lock > /tmp/tools.txt \
    && pip install --no-cache-dir -q -r /tmp/tools.txt \
    && mkdir llama_jax data_pipeline experiments \
    && uv pip install --system --no-cache -q -c requirements.lock ".[tpu,data]" \
    && uv pip uninstall --system -q llama_jax \
    && rm -rf llama_jax data_pipeline experiments
COPY . .
ARG COMMIT=unknown
ENV LLAMA_JAX_COMMIT=$COMMIT PYTHONUNBUFFERED=1
# xpk passes the command (cd /llama_jax && python -m llama_jax.train --multihost ...).
