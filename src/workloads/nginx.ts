// nginx from the host's Debian package (/usr/sbin/nginx; scripts/setup.sh installs it), run inside a container the
// way Redis is: the bundle mounts the host's /usr and /etc read-only, so the binary and its libraries are there.
// Its configuration is written to /tmp by the container's own shell at start: nothing on the host is changed.

/** Port the server listens on, on every address of the container. */
export const NGINX_PORT = 80;

/**
 * One master and one worker, in the foreground, logs to stderr only, every path it writes under /tmp. The worker
 * stays root, as the master: a process of another user cannot be checkpointed by an agent without
 * CAP_SYS_RESOURCE (CRIU could not read its rlimits). Keep-alive
 * connections stay open as long as a client keeps them (a benchmark's connections live through migrations).
 * Every request is answered `200 ok` from the configuration: what is measured is the switchover, not a disk.
 */
export const NGINX_CONF = `daemon off;
user root root;
master_process on;
worker_processes 1;
pid /tmp/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path /tmp/nginx/body;
  proxy_temp_path /tmp/nginx/proxy;
  fastcgi_temp_path /tmp/nginx/fastcgi;
  uwsgi_temp_path /tmp/nginx/uwsgi;
  scgi_temp_path /tmp/nginx/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 3600s;
  server {
    listen ${NGINX_PORT};
    default_type text/plain;
    location / { return 200 "ok\\n"; }
  }
}
`;

/** argv of a container running nginx with NGINX_CONF (busybox writes the file, then becomes nginx). */
export function nginxArgs(): string[] {
  return [
    '/bin/busybox',
    'sh',
    '-c',
    'mkdir -p /tmp/nginx && printf "%s" "$0" > /tmp/nginx/nginx.conf && exec /usr/sbin/nginx -e stderr -p /tmp/nginx/ -c /tmp/nginx/nginx.conf',
    NGINX_CONF,
  ];
}
