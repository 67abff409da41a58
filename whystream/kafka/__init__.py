"""The Kafka layer: every client made from one Settings object (`clients`), the topics
and their layout (`topics`), reading a topic to its end without a group (`reader`),
publishing with a confirmation per message (`publisher`), the message types the
engines see (`messages`), dead letters written (`dead_letters`) and sent back
(`redrive`)."""
