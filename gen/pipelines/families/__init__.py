"""One module per stock pipeline family that `steer` runs through gen's loop by way of the stock call itself
(`gen.pipelines.stock_loop`): each says only what the stock call's recorded backbone calls cannot."""
