"""Refuses requests whose bytes do not parse, with INVALID_ARGUMENT naming the method.

grpcio answers a request it cannot deserialize with INTERNAL ("Exception deserializing
request!"), which reads like a server fault and tells the caller nothing. This interceptor makes
every deserializer total: bytes that do not parse become an `Undecodable` value, and the method
is answered with INVALID_ARGUMENT and the parser's reason before the servicer sees anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class Undecodable:
    reason: str


def _total(parse: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # protobuf's DecodeError and friends: the frame is refused
            return Undecodable(f"{method}: the request is not a valid message ({exc})")
    return deserialize


def _refuse(context: grpc.ServicerContext, request: Undecodable) -> None:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)


def _unary(behavior: Callable[[Any, grpc.ServicerContext], Any]
           ) -> Callable[[Any, grpc.ServicerContext], Any]:
    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            _refuse(context, request)
        return behavior(request, context)
    return guarded


def _streaming(behavior: Callable[[Iterator[Any], grpc.ServicerContext], Any]
               ) -> Callable[[Iterator[Any], grpc.ServicerContext], Any]:
    def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        def checked() -> Iterator[Any]:
            for request in requests:
                if isinstance(request, Undecodable):
                    _refuse(context, request)
                yield request
        return behavior(checked(), context)
    return guarded


class RefuseMalformed(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        deserialize = _total(handler.request_deserializer, method)
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary), deserialize, serialize)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _unary(handler.unary_stream), deserialize, serialize)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _streaming(handler.stream_unary), deserialize, serialize)
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream), deserialize, serialize)
