FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_DEBUG=0 FTPORTAL_VAR_DIR=/data
WORKDIR /app
# Override for GPU hosts, e.g. --build-arg TORCH_SPEC="torch==2.13.0" from a CUDA index.
ARG TORCH_SPEC="torch==2.13.0"
COPY requirements.txt requirements-data.txt ./
RUN pip install --no-cache-dir "$TORCH_SPEC" \
 && pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-data.txt
COPY . .
# WhiteNoise (in the middleware) serves the collected files at /static/ from gunicorn itself.
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --no-input -v0
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
