"""Mailbox operators: the reference operator behind an access point, and the Service v3 (SOAP) adapter.

How a message reaches a mailbox
    A router hands a delivery to an operator in one of two ways (``channels``):
    - over AS4: submit it to its own access point on the operator's two-way push-and-push P-Mode
      (``As4Channel.deliver``); the operator's access point receives it and the operator (this package's
      ``service.Operator``, ``accesspoint operator serve``) takes it as that access point's backend;
    - over SOAP: ``deliverSecure`` of the SealedDelivery to an operator still on Service v3
      (``SoapChannel.deliver``, built on ``soap.ServiceV3Client``); the reference operator answers it too, at
      ``/soap/v3/service``.

What the operator does (``service``), pure parts in ``deliveries`` and ``receipts``
    webhook / poll -> download -> ``deliveries.check_delivery`` (seal, sender signature, trust; XHE; SBD) ->
    the recipient's mailbox (``mailbox``) or a refusal -> the signed answer (``receipts.build_answer``)
    submitted with ``ref_to_message_id`` on the reply leg -> acknowledge at the access point.

How the sender sees "delivered to the mailbox"
    ``sender.end_to_end_status(api, token, message_id, operator_certificate)`` (and ``accesspoint operator
    status``): the reply referring to the sent message, checked by ``receipts.check_end_to_end`` (signature by
    the operator, the sent message's id and payload digests, the Receipt / Meddelandekvittens fitting what was
    sent) -> ``delivered-to-mailbox`` or ``rejected``, when, by which operator and whose signature.
"""
