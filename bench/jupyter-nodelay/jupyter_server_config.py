# Config template used by bench/proxy.sh for its "ws-nodelay" variant (copied into a scratch
# JUPYTER_CONFIG_DIR; never installed anywhere else).
#
# jupyter_server writes each kernel message to the WebSocket as a separate small TCP write and
# does not set TCP_NODELAY on the connection. A kernel_info_request produces three messages
# (iopub "busy", the shell reply, iopub "idle"): the reply waits, under Nagle's algorithm,
# for the ACK of "busy", which the receiver delays by up to 40 ms. That stall dominates the
# round trip whatever sits in between, so the proxy's own cost only shows with it removed.
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler as _Handler

_original_open = _Handler.open


def _open_nodelay(self, *args, **kwargs):
    self.set_nodelay(True)  # tornado.websocket.WebSocketHandler.set_nodelay
    return _original_open(self, *args, **kwargs)


_Handler.open = _open_nodelay
