module edgemodel.local/pause

go 1.22
