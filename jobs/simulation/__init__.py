"""The synthetic stream of the demo and the tests: card transactions with a known fraud
mechanism (`generator`), the fraud model trained on them (`train`), and a producer
that scores and sends them (`produce`)."""
